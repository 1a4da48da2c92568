from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence

from pipeline.errors import ImageReadError
from pipeline.imageio import decode_image, read_image

RNG = np.random.default_rng(7)


def _grey8(h: int = 37, w: int = 53) -> np.ndarray:
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def _grey16(h: int = 41, w: int = 29) -> np.ndarray:
    return RNG.integers(0, 65536, (h, w), dtype=np.uint16)


def test_png_8_and_16_bit_are_read_exactly(tmp_path: Path) -> None:
    a8, a16 = _grey8(), _grey16()
    Image.fromarray(a8).save(tmp_path / "a8.png")
    Image.fromarray(a16).save(tmp_path / "a16.png")
    r8, r16 = read_image(tmp_path / "a8.png"), read_image(tmp_path / "a16.png")
    assert r8.dtype == np.uint8 and np.array_equal(r8, a8)
    assert r16.dtype == np.uint16 and np.array_equal(r16, a16)
    assert decode_image((tmp_path / "a16.png").read_bytes()).plain_png


def test_jpeg_matches_pillows_decode(tmp_path: Path) -> None:
    Image.fromarray(_grey8(64, 80)).save(tmp_path / "a.jpg", quality=85)
    with Image.open(tmp_path / "a.jpg") as image:
        expected = np.asarray(image)
    pixels = read_image(tmp_path / "a.jpg")
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, expected)
    assert not decode_image((tmp_path / "a.jpg").read_bytes()).plain_png


def test_colour_modes_become_luma_grey(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(read_image(tmp_path / "rgb.png"), luma)
    # ITU-R 601-2 weights, to within Pillow's integer rounding
    assert np.abs(luma.astype(float) - rgb @ np.array([0.299, 0.587, 0.114])).max() <= 1.0

    rgba = np.dstack([rgb, RNG.integers(0, 256, (20, 30), dtype=np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), luma)  # alpha dropped, not composited

    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    with Image.open(tmp_path / "pal.png") as pal:
        assert pal.mode == "P"
        expected = np.asarray(pal.convert("L"))
    assert np.array_equal(read_image(tmp_path / "pal.png"), expected)

    grey = _grey8(20, 30)
    Image.fromarray(np.dstack([grey, grey[::-1]]), "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png"), grey)

    Image.fromarray(grey > 127).save(tmp_path / "bits.png")
    assert np.array_equal(read_image(tmp_path / "bits.png"), np.where(grey > 127, 255, 0).astype(np.uint8))


def test_32_bit_images_fit_uint16_or_are_refused(tmp_path: Path) -> None:
    ok = RNG.integers(0, 65536, (10, 12)).astype(np.int32)
    Image.fromarray(ok).save(tmp_path / "ok.tif")
    pixels = read_image(tmp_path / "ok.tif")
    assert pixels.dtype == np.uint16 and np.array_equal(pixels, ok)
    Image.fromarray(ok * 4).save(tmp_path / "wide.tif")
    with pytest.raises(ImageReadError, match="do not fit 16 bits"):
        read_image(tmp_path / "wide.tif")
    Image.fromarray(ok.astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ImageReadError, match="unsupported image mode 'F'"):
        read_image(tmp_path / "float.tif")


def test_dicom_radiograph_keeps_stored_values_inverted_for_monochrome1() -> None:
    path = get_testdata_file("RG1_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 15
    stored = read_image(path, voi="none")  # the detector values, as stored
    assert stored.dtype == np.uint16 and stored.shape == (ds.Rows, ds.Columns)
    assert np.array_equal(stored, (2**15 - 1) - ds.pixel_array.astype(np.int64))

    # the default applies the file's WindowCenter/Width, as a viewer shows the radiograph
    assert "WindowCenter" in ds
    windowed = read_image(path)
    expected = np.rint(apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, index=0))
    assert np.array_equal(windowed, ((2**15 - 1) - expected).astype(np.uint16))
    assert np.array_equal(read_image(path, voi="window"), windowed)  # the old name


def test_dicom_voi_lut_sequence_is_applied_in_auto(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    item = Dataset()
    item.LUTDescriptor = [32768, 0, 16]
    item.add_new("LUTData", "OW", (np.arange(32768) // 2).astype("<u2").tobytes())
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(tmp_path / "lut.dcm")
    pixels = read_image(tmp_path / "lut.dcm")
    assert np.array_equal(pixels, 65535 - ds.pixel_array // 2)
    assert np.array_equal(read_image(tmp_path / "lut.dcm", voi="none"), 32767 - ds.pixel_array)


def test_signed_dicom_is_shifted_into_uint16() -> None:
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 1
    pixels = read_image(path)
    assert pixels.dtype == np.uint16
    assert np.array_equal(pixels.astype(np.int64), ds.pixel_array.astype(np.int64) + 2 ** (ds.BitsStored - 1))


def test_dicom_without_pixel_data_and_multiframe_are_refused(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(ImageReadError, match="DICOM without pixel data") as info:
        read_image(tmp_path / "nopix.dcm")
    assert str(tmp_path / "nopix.dcm") in str(info.value)
    with pytest.raises(ImageReadError, match="multi-frame DICOM"):
        read_image(get_testdata_file("emri_small.dcm"))


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty file"),
        ("text.png", b"this is not an image at all", "not an image file"),
        ("missing.png", None, "missing file"),
    ],
)
def test_unreadable_files_raise_with_path_and_reason(tmp_path: Path, name: str, content, reason: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_files_are_detected(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full.{suffix}"
    Image.fromarray(_grey16(120, 90) if suffix == "png" else _grey8(120, 90)).save(full)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(cut)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_huge_png_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(20000, 20000))
    started = time.perf_counter()
    with pytest.raises(ImageReadError, match="20000x20000 = 400,000,000 pixels exceeds"):
        read_image(path)
    with pytest.raises(ImageReadError, match="exceeds"):
        read_image(path, max_side=512)  # PNG has no reduced decode: still refused
    assert time.perf_counter() - started < 1.0


def test_huge_jpeg_is_decoded_reduced_when_max_side_is_set(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(np.tile(_grey8(64, 64), (32, 32))).save(path, quality=90)  # 2048 x 2048
    with pytest.raises(ImageReadError, match="or set max_side"):
        read_image(path, max_pixels=500_000)
    pixels = read_image(path, max_side=256, max_pixels=500_000)  # libjpeg 1/8 scale: 256 x 256
    assert pixels.shape == (256, 256) and pixels.dtype == np.uint8
    assert abs(float(pixels.mean()) - float(read_image(path).mean())) < 2.0


def test_max_side_resizes_long_side_keeping_dtype(tmp_path: Path) -> None:
    a8, a16 = _grey8(100, 60), _grey16(50, 120)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    Image.fromarray(a16).save(tmp_path / "a16.png")
    r8 = read_image(tmp_path / "a8.png", max_side=40)
    assert r8.shape == (40, 24) and r8.dtype == np.uint8
    assert np.array_equal(r8, np.asarray(Image.fromarray(a8).resize((24, 40), Image.Resampling.LANCZOS)))
    r16 = read_image(tmp_path / "a16.png", max_side=60)
    assert r16.shape == (25, 60) and r16.dtype == np.uint16
    expected = np.asarray(Image.fromarray(a16.astype(np.float32)).resize((60, 25), Image.Resampling.LANCZOS))
    assert np.array_equal(r16, np.clip(np.rint(expected), 0, 65535).astype(np.uint16))
    assert r16.max() > 255  # 16-bit precision survives the resize
    assert np.array_equal(read_image(tmp_path / "a8.png", max_side=500), a8)  # never upscaled
    assert not decode_image((tmp_path / "a8.png").read_bytes(), max_side=40).plain_png


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = _grey8(20, 40)  # stored wide; the tag says "rotate 90 CW" to view it
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    with Image.open(tmp_path / "rotated.jpg") as raw:
        stored = np.asarray(raw)
    upright = read_image(tmp_path / "rotated.jpg")
    assert upright.shape == (40, 20)
    assert np.array_equal(upright, np.rot90(stored, k=-1))
