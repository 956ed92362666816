"""Tests for pipeline.images: round trips on real images, every bad input, fuzzing with Hypothesis."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import struct
import zlib
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import pytest
import skimage
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps, PngImagePlugin

from pipeline.errors import ImageError, UsageError
from pipeline.images import (
    IMAGE_EXTENSIONS,
    DecodedImage,
    is_image_path,
    png_may_hold_orientation,
    read_image,
)

DATA = Path(skimage.__file__).parent / "data"


def rgb() -> np.ndarray:
    return np.array(Image.open(DATA / "astronaut.png").convert("RGB"))


def gray() -> np.ndarray:
    return np.array(Image.open(DATA / "camera.png"))


def save(pixels: np.ndarray, path: Path, **options) -> Path:
    Image.fromarray(pixels).save(path, **options)
    return path


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """Write `(H, W, C)` uint16 pixels (C in 2, 3, 4) as a 16-bit PNG, which Pillow cannot write: with
    OpenCV for RGB and RGBA; OpenCV writes no gray+alpha PNG, so that one with imagecodecs' encoder."""
    if pixels.shape[2] == 2:
        path.write_bytes(imagecodecs.png_encode(pixels))
        return path
    order = [2, 1, 0] if pixels.shape[2] == 3 else [2, 1, 0, 3]  # OpenCV writes BGR(A)
    assert cv2.imwrite(str(path), np.ascontiguousarray(pixels[:, :, order]))
    return path


def opencv_pixels(path: Path) -> np.ndarray:
    """The oracle: OpenCV's decoding of a 16-bit colour PNG, colour channels only, RGB order (OpenCV reads
    gray+alpha as four channels, the gray value three times)."""
    decoded = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    if path.read_bytes()[25] == 4:
        return decoded[:, :, :1]
    return decoded[:, :, [2, 1, 0]]


def deep_rgb(height: int = 37, width: int = 53, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = rgb()[:height, :width].astype(np.uint16) * 257
    noise = rng.integers(0, 257, size=(height, width, 3), dtype=np.uint16)
    pixels = smooth + noise
    if channels == 4:
        pixels = np.dstack([pixels, rng.integers(0, 65536, size=(height, width), dtype=np.uint16)])
    if channels == 2:
        pixels = np.dstack([pixels[:, :, 0], pixels[:, :, 1]])
    return pixels


def assert_valid(image: DecodedImage) -> None:
    assert image.pixels.ndim == 3 and image.channels in (1, 3)
    assert image.pixels.dtype in (np.uint8, np.uint16, np.float32, np.float64)
    assert image.pixels.dtype.isnative
    assert image.data_range > 0
    assert len(image.sha256) == 64


# Extensions


def test_extensions_are_lower_case_with_dot() -> None:
    assert {
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".npy",
        ".nii",
        ".nii.gz",
    } == IMAGE_EXTENSIONS


@pytest.mark.parametrize(
    "name", ["a.png", "B.PNG", "c.JpEg", "d.tiff", "e.NPY", "f.webp", "g.bmp", "h.nii", "i.NII.GZ"]
)
def test_is_image_path_true(name: str) -> None:
    assert is_image_path(name)
    assert is_image_path(Path("folder") / name)


@pytest.mark.parametrize("name", ["a.txt", "b.png.bak", "c", "d.gif", ".png"])
def test_is_image_path_false(name: str) -> None:
    assert not is_image_path(name)


# Round trips


def test_png_rgb_round_trip(tmp_path: Path) -> None:
    pixels = rgb()
    image = read_image(save(pixels, tmp_path / "a.png"))
    np.testing.assert_array_equal(image.pixels, pixels)
    assert (image.pixels.dtype, image.bit_depth, image.data_range) == (np.uint8, 8, 255.0)
    assert (image.height, image.width, image.channels) == (512, 512, 3)
    assert image.warnings == []


def test_png_gray_round_trip(tmp_path: Path) -> None:
    pixels = gray()
    image = read_image(save(pixels, tmp_path / "g.png"))
    assert image.pixels.shape == (*pixels.shape, 1)
    np.testing.assert_array_equal(image.pixels[:, :, 0], pixels)


def test_png_gray_16_bit(tmp_path: Path) -> None:
    pixels = gray().astype(np.uint16) * 257 + 3
    path = save(pixels, tmp_path / "g16.png")
    image = read_image(path)
    assert image.pixels.dtype == np.uint16
    assert image.pixels.max() > 255
    np.testing.assert_array_equal(image.pixels[:, :, 0], pixels)
    assert (image.bit_depth, image.data_range) == (16, 65535.0)


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_png_16_bit_colour_keeps_full_depth(tmp_path: Path, channels: int) -> None:
    pixels = deep_rgb(channels=channels)
    path = write_png16(tmp_path / "c16.png", pixels)
    image = read_image(path)
    kept = 1 if channels == 2 else 3
    np.testing.assert_array_equal(image.pixels, pixels[:, :, :kept])
    np.testing.assert_array_equal(image.pixels, opencv_pixels(path))
    assert (image.pixels.dtype, image.bit_depth, image.data_range) == (np.uint16, 16, 65535.0)
    if channels != 3:
        assert any("alpha channel dropped" in w for w in image.warnings)
    high_bytes = np.array(Image.open(path).convert("RGB" if kept == 3 else "L"))
    np.testing.assert_array_equal(image.pixels.reshape(high_bytes.shape) >> 8, high_bytes)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 9), (9, 1), (3, 2)])
def test_png_16_bit_tiny_sizes(tmp_path: Path, height: int, width: int) -> None:
    pixels = deep_rgb(height, width)
    image = read_image(write_png16(tmp_path / "t.png", pixels))
    np.testing.assert_array_equal(image.pixels, pixels)


def test_png_16_bit_colour_bad_crc_is_corrupt(tmp_path: Path) -> None:
    path = write_png16(tmp_path / "c16.png", deep_rgb())
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"c16\.png"):
        read_image(path)


def test_tiff_gray_16_bit(tmp_path: Path) -> None:
    pixels = gray().astype(np.uint16) * 200
    image = read_image(save(pixels, tmp_path / "g16.tif"))
    np.testing.assert_array_equal(image.pixels[:, :, 0], pixels)
    assert (image.pixels.dtype, image.data_range) == (np.uint16, 65535.0)


@pytest.mark.parametrize(
    "options", [{}, {"compression": "zlib"}, {"planarconfig": "separate"}], ids=["raw", "zlib", "planar"]
)
def test_tiff_rgb_16_bit(tmp_path: Path, options: dict) -> None:
    pixels = deep_rgb()
    path = tmp_path / "c16.tiff"
    stored = np.moveaxis(pixels, -1, 0) if options.get("planarconfig") == "separate" else pixels
    tifffile.imwrite(path, stored, photometric="rgb", **options)
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, pixels)
    assert (image.pixels.dtype, image.bit_depth, image.data_range) == (np.uint16, 16, 65535.0)


def test_tiff_rgba_16_bit_drops_alpha(tmp_path: Path) -> None:
    pixels = deep_rgb(channels=4)
    path = tmp_path / "c16.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", extrasamples=["unassalpha"])
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, pixels[:, :, :3])
    assert "alpha channel dropped (RGBA)" in image.warnings


def test_tiff_8_bit_rgb(tmp_path: Path) -> None:
    pixels = rgb()
    image = read_image(save(pixels, tmp_path / "c.tif"))
    np.testing.assert_array_equal(image.pixels, pixels)


def test_jpeg_decodes_like_pillow(tmp_path: Path) -> None:
    path = save(rgb(), tmp_path / "a.jpg", quality=90)
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, np.array(Image.open(path)))
    assert image.bit_depth == 8
    assert np.abs(image.pixels.astype(int) - rgb()).mean() < 5


def test_jpeg_gray(tmp_path: Path) -> None:
    image = read_image(save(gray(), tmp_path / "g.jpeg"))
    assert image.pixels.shape == (512, 512, 1)


def test_bmp_round_trip(tmp_path: Path) -> None:
    pixels = np.array(Image.open(DATA / "chelsea.png").convert("RGB"))
    np.testing.assert_array_equal(read_image(save(pixels, tmp_path / "c.bmp")).pixels, pixels)


def test_webp_lossless_equals_source(tmp_path: Path) -> None:
    pixels = np.array(Image.open(DATA / "coffee.png").convert("RGB"))
    image = read_image(save(pixels, tmp_path / "c.webp", lossless=True))
    np.testing.assert_array_equal(image.pixels, pixels)


def test_rgba_alpha_dropped(tmp_path: Path) -> None:
    pixels = rgb()
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 7, np.uint8)])
    image = read_image(save(rgba, tmp_path / "a.png"))
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.warnings == ["alpha channel dropped (RGBA)"]


def test_gray_alpha_dropped(tmp_path: Path) -> None:
    pixels = gray()
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([pixels, pixels]), mode="LA").save(path)
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels[:, :, 0], pixels)
    assert image.warnings == ["alpha channel dropped (LA)"]


def test_palette_with_transparency(tmp_path: Path) -> None:
    palette_image = Image.fromarray(rgb()).quantize(colors=64)
    path = tmp_path / "p.png"
    palette_image.save(path, transparency=0)
    assert Image.open(path).mode == "P"
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, np.array(palette_image.convert("RGB")))
    assert "palette converted to RGB" in image.warnings
    assert "transparency dropped (palette)" in image.warnings


def test_gray_palette_stays_gray(tmp_path: Path) -> None:
    pixels = gray()
    path = tmp_path / "p.png"
    Image.fromarray(pixels).convert("P").save(path)
    assert Image.open(path).mode == "P"
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels[:, :, 0], pixels)
    assert image.channels == 1


def test_cmyk_jpeg_converted(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb()).convert("CMYK").save(path)
    image = read_image(path)
    assert image.channels == 3
    np.testing.assert_array_equal(image.pixels, np.array(Image.open(path).convert("RGB")))
    assert "CMYK converted to RGB" in image.warnings


def test_bilevel_is_8_bit_gray(tmp_path: Path) -> None:
    path = tmp_path / "b.png"
    Image.fromarray(gray() > 128).save(path)
    image = read_image(path)
    assert image.pixels.dtype == np.uint8
    assert set(np.unique(image.pixels)) == {0, 255}


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    pixels = rgb()[:300, :200]
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "r.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.pixels.shape == (200, 300, 3)
    assert "EXIF orientation 6 applied" in image.warnings
    np.testing.assert_array_equal(image.pixels, np.array(ImageOps.exif_transpose(Image.open(path))))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(rgb()[:30, :20]).save(path, exif=exif)
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, np.array(ImageOps.exif_transpose(Image.open(path))))


def _png_chunks(data: bytes) -> list[bytes]:
    """The chunks of a PNG file, each with its length, type and CRC."""
    chunks, offset = [], 8
    while offset < len(data):
        length = struct.unpack(">I", data[offset : offset + 4])[0]
        chunks.append(data[offset : offset + 12 + length])
        offset += 12 + length
    return chunks


def _exif_after_image_data(data: bytes) -> bytes:
    """The same PNG with its eXIf chunk moved after the image data (where Pillow reads it only on load)."""
    chunks = _png_chunks(data)
    exif = [chunk for chunk in chunks if chunk[4:8] == b"eXIf"]
    rest = [chunk for chunk in chunks if chunk[4:8] != b"eXIf"]
    assert len(exif) == 1
    return data[:8] + b"".join(rest[:-1] + exif + rest[-1:])


def _orientation_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("where", ["exif after the image data", "raw profile text", "xmp", "compressed xmp"])
def test_png_orientation_wherever_pillow_finds_it(tmp_path: Path, where: str) -> None:
    """Every PNG orientation Pillow applies is applied, wherever the file keeps it."""
    path, info = tmp_path / "o.png", PngImagePlugin.PngInfo()
    if where == "raw profile text":
        raw = _orientation_exif(6).tobytes().hex()
        info.add_text("Raw profile type exif", f"\nexif\n{len(raw) // 2:8d}\n{raw}\n")
    elif where.endswith("xmp"):
        xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
        info.add_itxt("XML:com.adobe.xmp", xmp, zip=where.startswith("compressed"))
    Image.fromarray(rgb()[:30, :20]).save(
        path, pnginfo=info, exif=_orientation_exif(6) if "after" in where else None
    )
    if "after" in where:
        path.write_bytes(_exif_after_image_data(path.read_bytes()))
    image = read_image(path)
    expected = np.array(ImageOps.exif_transpose(Image.open(path)))
    assert expected.shape == (20, 30, 3)
    np.testing.assert_array_equal(image.pixels, expected)
    assert "EXIF orientation 6 applied" in image.warnings


def test_a_png_is_searched_for_orientation_by_its_chunks_only(tmp_path: Path) -> None:
    """Only an eXIf chunk or a text chunk of Pillow's orientation keywords sends a PNG to Pillow's EXIF
    reading; the same bytes inside the image data, another text keyword or none do not; a chunk list that
    runs past the end of the file does (Pillow then decides)."""
    path = tmp_path / "t.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Raw profile type exif, eXIf, XML:com.adobe.xmp")  # in the text, not the keyword
    Image.fromarray(rgb()[:30, :20]).save(path, pnginfo=info)
    data = path.read_bytes()
    assert not png_may_hold_orientation(data)
    assert png_may_hold_orientation(data[:-20])  # truncated: the IEND chunk is missing
    Image.fromarray(rgb()[:30, :20]).save(path, exif=_orientation_exif(3))
    assert png_may_hold_orientation(path.read_bytes())
    with_text = PngImagePlugin.PngInfo()
    with_text.add_text("Raw profile type exif", "exif\n 0\n")
    Image.fromarray(rgb()[:30, :20]).save(path, pnginfo=with_text)
    assert png_may_hold_orientation(path.read_bytes())


def test_sha256_of_file_bytes(tmp_path: Path) -> None:
    path = save(rgb(), tmp_path / "a.png")
    assert read_image(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    npy = tmp_path / "a.npy"
    np.save(npy, gray())
    assert read_image(npy).sha256 == hashlib.sha256(npy.read_bytes()).hexdigest()


def test_path_recorded_as_string(tmp_path: Path) -> None:
    path = save(gray(), tmp_path / "g.png")
    assert read_image(path).path == str(path)


# .npy arrays


def test_npy_2d_uint8(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", gray())
    image = read_image(tmp_path / "a.npy")
    assert image.pixels.shape == (512, 512, 1)
    assert (image.bit_depth, image.data_range) == (8, 255.0)


def test_npy_3d_uint16_big_endian(tmp_path: Path) -> None:
    pixels = deep_rgb()
    np.save(tmp_path / "a.npy", pixels.astype(">u2"))
    image = read_image(tmp_path / "a.npy")
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.pixels.dtype == np.dtype(np.uint16)
    assert (image.bit_depth, image.data_range) == (16, 65535.0)


def test_npy_rgba_drops_alpha(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((4, 5, 4), np.uint8))
    image = read_image(tmp_path / "a.npy")
    assert image.pixels.shape == (4, 5, 3)
    assert any("alpha channel dropped" in w for w in image.warnings)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npy_float_needs_data_range(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "f.npy"
    np.save(path, rgb().astype(dtype) / 255)
    with pytest.raises(ImageError, match="needs an explicit data range") as info:
        read_image(path)
    assert "f.npy" in str(info.value)
    image = read_image(path, data_range=1.0)
    assert image.pixels.dtype == dtype
    assert image.data_range == 1.0
    assert image.bit_depth == np.dtype(dtype).itemsize * 8
    np.testing.assert_array_equal(image.pixels, rgb().astype(dtype) / 255)
    assert image.warnings == []


def test_npy_float_outside_range_warns(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.full((3, 3), 2.0))
    assert "outside the data range" in read_image(tmp_path / "f.npy", data_range=1.0).warnings[0]


def test_npy_float_non_finite(tmp_path: Path) -> None:
    pixels = np.zeros((3, 3), np.float32)
    pixels[1, 1] = np.nan
    np.save(tmp_path / "nan.npy", pixels)
    with pytest.raises(ImageError, match=r"nan\.npy.*NaN"):
        read_image(tmp_path / "nan.npy", data_range=1.0)


@pytest.mark.parametrize("dtype", [bool, np.int32, np.complex64, np.float16, np.int8])
def test_npy_unsupported_dtype(tmp_path: Path, dtype: type) -> None:
    np.save(tmp_path / "d.npy", np.zeros((3, 3), dtype))
    with pytest.raises(ImageError, match=r"d\.npy.*not supported"):
        read_image(tmp_path / "d.npy", data_range=1.0)


@pytest.mark.parametrize("shape", [(5,), (4, 4, 2), (4, 4, 5), (2, 3, 3, 3)])
def test_npy_bad_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    np.save(tmp_path / "s.npy", np.zeros(shape, np.uint8))
    with pytest.raises(ImageError, match=r"s\.npy has shape"):
        read_image(tmp_path / "s.npy")


UNPICKLED: list[str] = []


def mark_unpickled() -> str:
    UNPICKLED.append("unpickled")
    return "boom"


class Trap:
    def __reduce__(self):
        return (mark_unpickled, ())


def test_npy_object_array_is_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "obj.npy"
    np.save(path, np.array([[Trap(), Trap()]], dtype=object), allow_pickle=True)
    with pytest.raises(ImageError, match=r"obj\.npy.*never loaded"):
        read_image(path)
    assert UNPICKLED == []


def test_npy_raw_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.npy"
    import pickle

    path.write_bytes(pickle.dumps(Trap()))
    with pytest.raises(ImageError, match=r"p\.npy is not a valid \.npy"):
        read_image(path)
    assert UNPICKLED == []


def test_npy_truncated(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    np.save(path, gray())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ImageError, match=r"t\.npy is truncated"):
        read_image(path)


def test_npy_header_claims_huge_shape(tmp_path: Path) -> None:
    path = tmp_path / "h.npy"
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (100000, 100000), }"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.ljust(117).encode() + b"\n")
    with pytest.raises(ImageError, match=r"h\.npy is 100000x100000"):
        read_image(path)


# Bad inputs


def test_truncated_png(tmp_path: Path) -> None:
    path = save(rgb(), tmp_path / "t.png")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"t\.png is truncated or corrupt"):
        read_image(path)


def test_truncated_png_header(tmp_path: Path) -> None:
    path = save(rgb(), tmp_path / "t.png")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ImageError, match=r"t\.png is truncated or corrupt"):
        read_image(path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = save(rgb(), tmp_path / "t.jpg")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"t\.jpg is truncated or corrupt"):
        read_image(path)


def test_truncated_16_bit_png(tmp_path: Path) -> None:
    path = write_png16(tmp_path / "t16.png", deep_rgb())
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ImageError, match=r"t16\.png is truncated or corrupt"):
        read_image(path)


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png is empty \(0 bytes\)"):
        read_image(path)


def test_text_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageError, match=r"notes\.png is not an image Pillow can read"):
        read_image(path)


def test_directory_named_png(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.mkdir()
    with pytest.raises(ImageError, match=r"x\.png is a directory"):
        read_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"nope\.png does not exist"):
        read_image(tmp_path / "nope.png")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    with pytest.raises(ImageError, match=r"pipe\.png is not a regular file"):
        read_image(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files with mode 000")
def test_unreadable_file(tmp_path: Path) -> None:
    path = save(gray(), tmp_path / "locked.png")
    path.chmod(0)
    try:
        with pytest.raises(ImageError, match=r"locked\.png cannot be read: permission denied"):
            read_image(path)
    finally:
        path.chmod(0o644)


def test_permission_error_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(gray(), tmp_path / "locked.png")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "read_bytes", refuse)
    with pytest.raises(ImageError, match=r"locked\.png cannot be read: permission denied"):
        read_image(path)


def png_header_only(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_by_pillow(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    with pytest.raises(ImageError, match=r"bomb\.png is too large.*10000000000 pixels"):
        read_image(path)


def test_decompression_bomb_over_max_pixels(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(9000, 8000))
    with pytest.raises(ImageError, match=r"bomb\.png is 9000x8000 pixels.*over the limit"):
        read_image(path, max_pixels=50_000_000)


def test_max_pixels_checked_before_decoding(tmp_path: Path) -> None:
    path = save(rgb(), tmp_path / "a.png")
    with pytest.raises(ImageError, match=r"a\.png is 512x512 pixels"):
        read_image(path, max_pixels=1000)
    path16 = write_png16(tmp_path / "b.png", deep_rgb())
    with pytest.raises(ImageError, match=r"b\.png is 53x37 pixels"):
        read_image(path16, max_pixels=1000)


@pytest.mark.parametrize(
    "kwargs", [{"data_range": 0}, {"data_range": -1.0}, {"data_range": float("nan")}, {"max_pixels": 0}]
)
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    path = save(gray(), tmp_path / "g.png")
    with pytest.raises(UsageError):
        read_image(path, **kwargs)


# Fuzzing


def fuzz_sources() -> dict[str, bytes]:
    small = rgb()[::16, ::16]
    sources = {}
    formats = {".png": {}, ".jpg": {"quality": 80}, ".webp": {"lossless": True}, ".bmp": {}, ".tif": {}}
    for suffix, options in formats.items():
        buffer = io.BytesIO()
        Image.fromarray(small).save(buffer, format=Image.registered_extensions()[suffix], **options)
        sources[suffix] = buffer.getvalue()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, deep_rgb(8, 8), photometric="rgb")
    sources[".tif16"] = buffer.getvalue()
    buffer = io.BytesIO()
    np.save(buffer, small)
    sources[".npy"] = buffer.getvalue()
    return sources


SOURCES = fuzz_sources()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    write_png16(folder / "deep.png", deep_rgb(8, 8))
    SOURCES[".png16"] = (folder / "deep.png").read_bytes()
    return folder


def check_outcome(path: Path) -> None:
    try:
        image = read_image(path, max_pixels=1_000_000, data_range=1.0)
    except ImageError as error:
        assert path.name in str(error)
    else:
        assert_valid(image)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), suffix=st.sampled_from(sorted(IMAGE_EXTENSIONS)))
def test_random_bytes_never_escape(fuzz_dir: Path, data: bytes, suffix: str) -> None:
    path = fuzz_dir / f"random{suffix}"
    path.write_bytes(data)
    check_outcome(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=st.sampled_from([".png", ".jpg", ".webp", ".bmp", ".tif", ".tif16", ".npy", ".png16"]),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_mutated_images_never_escape(
    fuzz_dir: Path, source: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(SOURCES[source])
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = fuzz_dir / f"mutated{source[:4]}"
    path.write_bytes(bytes(data))
    check_outcome(path)


@pytest.mark.parametrize("name", ["astronaut.png", "camera.png", "coffee.png", "chelsea.png", "logo.png"])
def test_8_bit_png_decodes_to_pillows_values(tmp_path: Path, name: str) -> None:
    """8-bit gray, RGB and RGBA PNG go through libspng; the values are Pillow's, alpha dropped with a note."""
    original = Image.open(DATA / name)
    path = tmp_path / name
    original.save(path)
    image = read_image(path)
    expected = np.array(original.convert("L" if original.mode == "L" else "RGB"))
    np.testing.assert_array_equal(image.pixels.reshape(expected.shape), expected)
    assert (original.mode == "RGBA") == ("alpha channel dropped (RGBA)" in image.warnings)


def test_8_bit_png_with_a_transparent_colour_keeps_its_channels(tmp_path: Path) -> None:
    pixels = rgb()[:40, :60]
    path = tmp_path / "trns.png"
    Image.fromarray(pixels).save(path, transparency=(1, 2, 3))
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, pixels)


def test_truncated_8_bit_png_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = save(rgb(), tmp_path / "cut.png")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ImageError, match=r"cut\.png is truncated or corrupt"):
        read_image(path)
