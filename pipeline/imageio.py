"""Decode one source image (PNG, JPEG, other Pillow formats, DICOM) into a 2-D uint8 or uint16 grey array.

Every failure raises `ImageReadError` naming the file and the reason; nothing here is fatal to a batch job
(the shard writer quarantines the file). The choices, each tested:

- Grey conversion: RGB/RGBA/CMYK/YCbCr and palette images become grey with Pillow's ITU-R 601-2 luma
  (L = 0.299 R + 0.587 G + 0.114 B); an alpha band is dropped, not composited; 1-bit images become 0/255.
  Multi-frame files (GIF, TIFF) give their first frame. EXIF orientation is applied (a phone photo or a
  JPEG export tagged "rotate 90" comes out upright, as a viewer shows it).
- Depth: 8-bit sources give uint8; 16-bit grey (Pillow "I;16*") gives uint16 unchanged; 32-bit integer
  images give uint16 when every value fits 0..65535 and are refused otherwise; float images are refused.
  (Pillow itself reduces 16-bit colour PNGs to 8 bits.)
- DICOM (pydicom): the stored values are kept exactly (no rescale, no windowing) and mapped losslessly into
  0..2**BitsStored-1 (signed data shifted by 2**(BitsStored-1)); uint8 when BitsStored <= 8, else uint16.
  The rescale slope/intercept (modality LUT) of a radiograph is a linear map into vendor units: a positive
  slope changes no contrast, so it is not applied (the exact integers survive); a negative slope inverts.
  The VOI transform is applied when the file has one (`voi="auto"`, the default), as a radiologist's viewer
  does: an explicit VOI LUT *sequence* (a vendor's presentation curve) first, else the first linear
  WindowCenter/Width (after the modality LUT); its integer output is kept. `voi="none"` (`chex shard
  --voi none`) keeps the stored detector values instead; "window" is the old name of "auto". Shard
  sidecars and store attributes record this policy (`DECODE_POLICY`). MONOCHROME1 is inverted within the
  nominal range (v -> 2**bits - 1 - v), so bright is always dense. Multi-frame DICOM and compressed transfer syntaxes
  without an installed decoder are refused, and so is a malformed VOI transform (WindowWidth <= 0, a LUT shorter
  than its descriptor or of unsupported depth): the reason names it and `--voi none` (never a silent fallback, which
  would mix two intensity scales in one data set). Any other pydicom failure is an `ImageReadError` too.
- Reasons never quote the file's contents (an unrecognised file is described as text or binary, with its size).
- Size guard: the header's dimensions are checked before any pixel is decoded; more than `max_pixels`
  (default 100 megapixels, ~10000 x 10000) is refused, except a JPEG when `max_side` is set, which is decoded
  with libjpeg's DCT reduction (Pillow `draft`, 1/2 .. 1/8) to the smallest size still >= `max_side` (refused
  if even that is over the limit).
- Truncation: Pillow loads every pixel (`load()`); `ImageFile.LOAD_TRUNCATED_IMAGES` stays False.
- `max_side`: an image whose long side exceeds it is downscaled with Lanczos (antialiased) so the long side is
  exactly `max_side`, keeping the dtype; smaller images are returned unchanged.
"""

from __future__ import annotations

import codecs
import functools
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from pipeline.errors import ImageReadError

MAX_PIXELS = 100_000_000
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
VoiMode = Literal["auto", "none", "window"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_GREY16 = ("I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels plus what the shard writer needs to know about the source bytes."""

    pixels: np.ndarray
    format: str  # "PNG", "JPEG", "DICOM", or another Pillow format name
    plain_png: bool  # the source bytes are a grey PNG that decodes to exactly `pixels` (may be copied as is)


def read_image(
    path: str | Path, max_side: int | None = None, *, max_pixels: int = MAX_PIXELS, voi: VoiMode = "auto"
) -> np.ndarray:
    """A 2-D uint8 or uint16 grey image from a PNG/JPEG/DICOM (or other Pillow) file; `ImageReadError` if not."""
    return decode_image(read_bytes(path), path, max_side, max_pixels=max_pixels, voi=voi).pixels


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes; `ImageReadError` for a missing, unreadable or empty file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: missing file") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    return data


def check_within(path: str | Path, root: str | Path) -> None:
    """`ImageReadError` when `path` (under the image `root`) is a symbolic link, or lies under one, that leads
    outside the root: a manifest names files in the root, and a link to /etc or a home folder is not followed."""
    real_root = _real_root(str(root))
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise ImageReadError(
            f"{path}: a symbolic link to {real}, outside the image root {real_root}; not followed (copy the file "
            "under the root, or point --root at a folder that holds it)"
        )


@functools.lru_cache(maxsize=16)
def _real_root(root: str) -> str:
    return os.path.realpath(root)  # once per root, not once per image of a million-image shard run


def decode_image(
    data: bytes,
    path: str | Path = "<bytes>",
    max_side: int | None = None,
    *,
    max_pixels: int = MAX_PIXELS,
    voi: VoiMode = "auto",
) -> DecodedImage:
    """Decode an image held in memory; `path` only names it in errors and picks DICOM by suffix."""
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if _is_dicom(data, path):
        pixels = _decode_dicom(data, path, max_pixels, voi)
        return DecodedImage(_resize(pixels, max_side), "DICOM", plain_png=False)
    return _decode_raster(data, path, max_side, max_pixels)


def resize_long_side(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """Lanczos downscale so the long side is `max_side` (dtype kept); unchanged if already small enough."""
    return _resize(pixels, max_side)


# --- Pillow formats -----------------------------------------------------------------------------------------


def _decode_raster(data: bytes, path: str | Path, max_side: int | None, max_pixels: int) -> DecodedImage:
    try:
        image = _open(data)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: refused, too many pixels ({exc})") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file ({_kind_of(data)})") from None
    except SyntaxError as exc:
        raise ImageReadError(f"{path}: not a recognised image file ({exc})") from None
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot parse image header ({type(exc).__name__}: {exc})") from None
    with image:
        try:
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageReadError(f"{path}: image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                _reduce_or_refuse(image, path, max_side, max_pixels)
            image.load()
            pixels = _grey_array(_upright(image), path)
            plain = (
                image.format == "PNG"
                and image.mode in ("L", *_GREY16)
                and not image.info.get("interlace")
                and not getattr(image, "text", None)
                and "exif" not in image.info
                and "icc_profile" not in image.info
            )
            fmt = image.format or "unknown"
        except ImageReadError:
            raise
        except Exception as exc:  # Pillow raises OSError/SyntaxError/ValueError/struct.error for broken data
            raise ImageReadError(f"{path}: cannot decode {image.format or 'image'} ({_reason(exc)})") from None
    resized = _resize(pixels, max_side)
    return DecodedImage(resized, fmt, plain_png=plain and resized is pixels)


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says (unchanged when there is no tag or it is 1)."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not a reason to lose the image
        return image
    if orientation in (None, 1):
        return image
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


DECODE_POLICY = "DICOM VOI LUT or WindowCenter/Width applied when present (voi=auto); EXIF orientation applied"


def _open(data: bytes) -> Image.Image:
    """Open by magic bytes. PNG and JPEG use their plugins directly: Pillow's own bomb check in `Image.open`
    would refuse a huge JPEG before we could ask libjpeg for a reduced decode; we check sizes ourselves."""
    stream = io.BytesIO(data)
    if data.startswith(_PNG_MAGIC):
        return PngImagePlugin.PngImageFile(stream)
    if data.startswith(_JPEG_MAGIC):
        return JpegImagePlugin.JpegImageFile(stream)
    return Image.open(stream)


def _reduce_or_refuse(image: Image.Image, path: str | Path, max_side: int | None, max_pixels: int) -> None:
    width, height = image.size
    if image.format == "JPEG" and max_side is not None:
        scale = max_side / max(width, height)
        image.draft(image.mode, (max(1, int(width * scale)), max(1, int(height * scale))))
        if image.size[0] * image.size[1] <= max_pixels:
            return
    raise ImageReadError(
        f"{path}: refused, {width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
        "(decompression-bomb guard); raise max_pixels if the image is genuine"
        + ("" if image.format != "JPEG" else ", or set max_side to decode it reduced")
    )


def _grey_array(image: Image.Image, path: str | Path) -> np.ndarray:
    mode = image.mode
    if mode == "L":
        return np.array(image, dtype=np.uint8)
    if mode in _GREY16:
        return np.array(image).astype(np.uint16)
    if mode == "I":
        values = np.array(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(
                f"{path}: unsupported 32-bit image, values {values.min()}..{values.max()} do not fit 16 bits"
            )
        return values.astype(np.uint16)
    if mode in ("LA", "La"):
        return np.array(image.getchannel(0), dtype=np.uint8)
    if mode in ("1", "P", "PA"):
        return np.array(image.convert("L"), dtype=np.uint8)
    if mode in ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = image if mode == "RGB" else image.convert("RGB")
        return np.array(rgb.convert("L"), dtype=np.uint8)
    raise ImageReadError(f"{path}: unsupported image mode {mode!r} (e.g. floating-point images are not radiographs)")


def _kind_of(data: bytes) -> str:
    """What an unrecognised file looks like, without quoting any of it (a reason lands in quarantine.csv)."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:4096])  # a cut last character is fine
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"a text file of {len(data):,} bytes"
    return f"unknown format, {len(data):,} bytes"


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError | struct.error):
        return f"truncated file: {text}"
    return text


# --- DICOM ---------------------------------------------------------------------------------------------------


def _is_dicom(data: bytes, path: str | Path) -> bool:
    return data[128:132] == b"DICM" or str(path).lower().endswith(DICOM_SUFFIXES)


def _decode_dicom(data: bytes, path: str | Path, max_pixels: int, voi: VoiMode) -> np.ndarray:
    try:
        return _dicom_pixels(data, path, max_pixels, voi)
    except ImageReadError:
        raise
    except Exception as exc:  # any other failure of pydicom on a malformed file is this file's, not the run's
        raise ImageReadError(f"{path}: cannot decode DICOM ({type(exc).__name__}: {_reason(exc)})") from None


def _dicom_pixels(data: bytes, path: str | Path, max_pixels: int, voi: VoiMode) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise ImageReadError(f"{path}: not a readable DICOM file ({_reason(exc)})") from None
    if "PixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM without pixel data (no PixelData element)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsStored)
        samples = int(ds.get("SamplesPerPixel", 1))
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    except Exception as exc:
        raise ImageReadError(f"{path}: DICOM image attributes missing or malformed ({exc})") from None
    if rows * cols > max_pixels:
        raise ImageReadError(
            f"{path}: refused, {cols}x{rows} = {rows * cols:,} pixels exceeds the limit of {max_pixels:,}"
        )
    if frames != 1:
        raise ImageReadError(f"{path}: multi-frame DICOM ({frames} frames) is not a single radiograph")
    if bits > 16:
        raise ImageReadError(f"{path}: unsupported DICOM with {bits} bits stored (at most 16)")
    try:
        stored = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raise ImageReadError(
            f"{path}: cannot decode DICOM pixel data (transfer syntax {getattr(syntax, 'name', syntax)}): "
            f"{_reason(exc)}; compressed syntaxes may need pylibjpeg/gdcm installed"
        ) from None
    if samples == 3:
        if stored.dtype != np.uint8:
            raise ImageReadError(f"{path}: unsupported {bits}-bit colour DICOM")
        return np.array(Image.fromarray(stored).convert("L"), dtype=np.uint8)
    if samples != 1 or stored.ndim != 2:
        raise ImageReadError(f"{path}: unsupported DICOM pixel layout (samples {samples}, shape {stored.shape})")

    if voi != "none" and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        try:
            values, nbits = _apply_voi(stored, ds, bits)
        except Exception as exc:  # pydicom raises ValueError/IndexError/struct.error/NotImplementedError here
            what = "VOI LUT sequence" if "VOILUTSequence" in ds else "WindowCenter/WindowWidth"
            raise ImageReadError(
                f"{path}: malformed DICOM VOI transform ({what}: {_reason(exc)}); its stored pixels are readable: "
                "shard with `--voi none` to keep the stored values for the whole data set"
            ) from None
        invert = photometric == "MONOCHROME1"
    else:
        values = stored.astype(np.int64)
        if ds.get("PixelRepresentation", 0) == 1:
            values += 2 ** (bits - 1)
        nbits = bits
        try:
            slope = float(ds.get("RescaleSlope", 1) or 1)
        except (TypeError, ValueError):
            slope = 1.0  # a malformed slope cannot invert; the stored values are kept either way
        invert = (photometric == "MONOCHROME1") != (slope < 0)
    top = 2**nbits - 1
    values = np.clip(values, 0, top)  # values outside the nominal range (stray high bits) cannot be represented
    if invert:
        values = top - values
    return values.astype(np.uint8 if nbits <= 8 else np.uint16)


def _apply_voi(stored: np.ndarray, ds, bits: int) -> tuple[np.ndarray, int]:
    """The VOI LUT / window applied after the modality LUT, shifted to start at 0, with its output bit depth."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_voi_lut(apply_modality_lut(stored, ds), ds, index=0, prefer_lut=True)
    if "VOILUTSequence" in ds:
        nbits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        low = 0.0
    else:  # pydicom's windowing output range: the stored range of BitsStored
        nbits = bits
        low = -(2.0 ** (bits - 1)) if ds.PixelRepresentation == 1 else 0.0
    if not 1 <= nbits <= 16:
        raise ValueError(f"{nbits} bits per output value")
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("the transform gives non-finite values")
    return np.rint(values - low), nbits


# --- resizing ------------------------------------------------------------------------------------------------


def _resize(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    if max_side is None:
        return pixels
    height, width = pixels.shape
    long_side = max(height, width)
    if long_side <= max_side:
        return pixels
    scale = max_side / long_side
    short = max(1, round(min(height, width) * scale))
    size = (max_side, short) if width >= height else (short, max_side)
    if pixels.dtype == np.uint8:
        return np.array(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)
    # 16-bit: resample in float32 (exact for integers < 2**24), then round and clip back into uint16
    resized = Image.fromarray(pixels.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.rint(np.asarray(resized)), 0, 65535).astype(np.uint16)
