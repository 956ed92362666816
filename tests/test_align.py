"""Tests for pipeline.align: channel replication, range rescaling and the size-mismatch policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.align import AlignedPair, align_pair
from pipeline.errors import ImageError, UsageError
from pipeline.images import DecodedImage, read_image

DATA = Path(skimage.__file__).parent / "data"


def decoded(pixels: np.ndarray, path: str = "img.png", data_range: float | None = None) -> DecodedImage:
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    bit_depth = pixels.dtype.itemsize * 8
    value_range = data_range if data_range is not None else float(2**bit_depth - 1)
    return DecodedImage(path, pixels, bit_depth, value_range, "0" * 64, [])


def astronaut() -> np.ndarray:
    return np.array(Image.open(DATA / "astronaut.png").convert("RGB"))


def camera() -> np.ndarray:
    return np.array(Image.open(DATA / "camera.png"))


def test_identical_pair_is_float64_of_stored_values() -> None:
    pixels = astronaut()
    pair = align_pair(decoded(pixels, "ref.png"), decoded(pixels, "out.png"))
    assert isinstance(pair, AlignedPair)
    assert pair.ref.dtype == np.float64 and pair.out.dtype == np.float64
    np.testing.assert_array_equal(pair.ref, pixels.astype(np.float64))
    np.testing.assert_array_equal(pair.out, pixels.astype(np.float64))
    assert pair.data_range == 255.0
    assert pair.warnings == []


def test_gray_pair_stays_one_channel() -> None:
    pair = align_pair(decoded(camera()), decoded(camera()))
    assert pair.ref.shape == pair.out.shape == (512, 512, 1)
    assert pair.warnings == []


def test_gray_output_replicated() -> None:
    gray = camera()
    pair = align_pair(decoded(astronaut(), "ref.png"), decoded(gray, "out.png"))
    assert pair.out.shape == (512, 512, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pair.out[:, :, channel], gray)
    assert pair.warnings == ["output is grayscale, reference RGB: gray replicated to 3 channels"]


def test_gray_reference_replicated() -> None:
    pair = align_pair(decoded(camera(), "ref.png"), decoded(astronaut(), "out.png"))
    assert pair.ref.shape == pair.out.shape == (512, 512, 3)
    np.testing.assert_array_equal(pair.ref[:, :, 2], camera())
    assert pair.warnings == ["reference is grayscale, output RGB: gray replicated to 3 channels"]


def test_16_bit_output_rescaled_to_8_bit_reference() -> None:
    ref = astronaut()
    out = ref.astype(np.uint16) * 257
    pair = align_pair(decoded(ref, "ref.png"), decoded(out, "out.png"))
    assert pair.data_range == 255.0
    np.testing.assert_allclose(pair.out, ref, rtol=0, atol=1e-9)
    assert len(pair.warnings) == 1
    assert "65535 (16-bit)" in pair.warnings[0] and "255 (8-bit)" in pair.warnings[0]


def test_8_bit_output_rescaled_to_16_bit_reference() -> None:
    ref = camera().astype(np.uint16) * 257
    out = camera()
    pair = align_pair(decoded(ref), decoded(out))
    assert pair.data_range == 65535.0
    np.testing.assert_allclose(pair.out[:, :, 0], ref, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(pair.ref[:, :, 0], ref)


def test_float_output_rescaled_to_reference_range() -> None:
    ref = astronaut()
    out = ref.astype(np.float32) / 255
    pair = align_pair(decoded(ref), decoded(out, "out.npy", data_range=1.0))
    np.testing.assert_allclose(pair.out, ref, rtol=0, atol=1e-4)
    assert "float32" in pair.warnings[0]


def test_size_mismatch_error_names_both_files_and_sizes() -> None:
    ref = decoded(astronaut(), "/data/ref/a.png")
    out = decoded(astronaut()[:500, :510], "/data/out/a.png")
    with pytest.raises(ImageError) as info:
        align_pair(ref, out)
    message = str(info.value)
    for part in ("/data/ref/a.png", "/data/out/a.png", "512x512", "510x500", "--size-mismatch crop|resize"):
        assert part in message


def test_crop_policy_takes_common_top_left() -> None:
    pixels = astronaut()
    ref = decoded(pixels[:500, :512])
    out = decoded(pixels[:512, :506])
    pair = align_pair(ref, out, size_mismatch="crop")
    assert pair.ref.shape == pair.out.shape == (500, 506, 3)
    np.testing.assert_array_equal(pair.ref, pixels[:500, :506])
    np.testing.assert_array_equal(pair.out, pixels[:500, :506])
    assert pair.warnings == [
        "sizes differ (reference 512x500, output 506x512): both cropped top-left to 506x500"
    ]


def test_crop_policy_with_channel_and_depth_mismatch() -> None:
    ref = decoded(astronaut()[:100, :90])
    out = decoded(camera()[:95, :100].astype(np.uint16) * 257)
    pair = align_pair(ref, out, size_mismatch="crop")
    assert pair.ref.shape == pair.out.shape == (95, 90, 3)
    np.testing.assert_allclose(pair.out[:, :, 1], camera()[:95, :90], atol=1e-9)
    assert len(pair.warnings) == 3


def test_resize_policy_matches_torch_bicubic() -> None:
    ref = decoded(astronaut())
    small = astronaut()[::2, ::2]
    pair = align_pair(ref, decoded(small, "out.png"), size_mismatch="resize")
    assert pair.out.shape == pair.ref.shape == (512, 512, 3)
    assert pair.out.min() >= 0 and pair.out.max() <= 255
    batch = torch.from_numpy(small.astype(np.float64)).permute(2, 0, 1)[None]
    expected = F.interpolate(batch, size=(512, 512), mode="bicubic", align_corners=False).clamp(0, 255)
    np.testing.assert_allclose(pair.out, expected[0].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(pair.ref, astronaut())
    assert pair.warnings == ["output resized from 256x256 to the reference size 512x512 (bicubic)"]


def test_resize_policy_keeps_constant_image_constant() -> None:
    ref = decoded(np.zeros((40, 30), np.uint8))
    out = decoded(np.full((17, 23), 200, np.uint8))
    pair = align_pair(ref, out, size_mismatch="resize")
    assert pair.out.shape == (40, 30, 1)
    np.testing.assert_allclose(pair.out, 200.0)


def test_same_size_ignores_policy() -> None:
    for policy in ("error", "crop", "resize"):
        assert align_pair(decoded(camera()), decoded(camera()), size_mismatch=policy).warnings == []


def test_unknown_policy_is_usage_error() -> None:
    with pytest.raises(UsageError, match="'stretch'"):
        align_pair(decoded(camera()), decoded(camera()), size_mismatch="stretch")


def test_bad_channel_count_is_image_error() -> None:
    bad = DecodedImage("bad.npy", np.zeros((4, 4, 2), np.uint8), 8, 255.0, "0" * 64, [])
    with pytest.raises(ImageError, match=r"bad\.npy"):
        align_pair(decoded(np.zeros((4, 4), np.uint8)), bad)


def test_real_files_gray_16_bit_against_rgb(tmp_path: Path) -> None:
    Image.fromarray(astronaut()).save(tmp_path / "ref.png")
    Image.fromarray(camera().astype(np.uint16) * 257).save(tmp_path / "out.png")
    pair = align_pair(read_image(tmp_path / "ref.png"), read_image(tmp_path / "out.png"))
    assert pair.ref.shape == pair.out.shape == (512, 512, 3)
    np.testing.assert_allclose(pair.out[:, :, 0], camera(), atol=1e-9)
    assert len(pair.warnings) == 2
