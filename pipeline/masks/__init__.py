"""Readers of public anatomy masks (issue 24's segmentation data): CheXmask's run-length CSVs (`rle`), JSRT's
SCR masks, Montgomery's and Shenzhen's lung masks (`files`). Each returns boolean masks by structure name:
right_lung / left_lung (the patient's sides, as CheXmask's "Right Lung" / "Left Lung"), heart, right_clavicle,
left_clavicle, and lungs (both, where a source does not tell them apart). Not wired into a task kind yet
(docs/architecture.md "Segmentation building blocks")."""

from pipeline.masks.files import index_montgomery, index_scr, index_shenzhen, read_binary_mask, read_indexed
from pipeline.masks.rle import CHEXMASK_STRUCTURES, chexmask_masks, decode_rle, encode_rle, read_chexmask

__all__ = [
    "CHEXMASK_STRUCTURES",
    "chexmask_masks",
    "decode_rle",
    "encode_rle",
    "index_montgomery",
    "index_scr",
    "index_shenzhen",
    "read_binary_mask",
    "read_chexmask",
    "read_indexed",
]
