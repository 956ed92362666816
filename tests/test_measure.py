"""pipeline/measure.py: the values of a batch of aligned pairs are the metric functions' values under the
convention, and every value left null comes with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PSNR_TOL, SSIM_TOL, degrade, real_image

from pipeline.conventions import resolve_convention, rgb_to_y
from pipeline.errors import ImageError
from pipeline.measure import Cache, measure
from pipeline.metrics import lpips, ms_ssim, mse, psnr, ssim

PIXEL_METRICS = ("psnr", "ssim", "ms_ssim", "mse")
DEFAULT = resolve_convention("default")


def stored_batch(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) images -> (N, 3, H, W) stored integers."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def photo_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 192 x 200 crops of real photos (uint8) and their JPEG and blurred versions."""
    references = [real_image("astronaut.png")[:192, :200], real_image("coffee.png")[100:292, :200]]
    outputs = [degrade(references[0], "jpeg"), degrade(references[1], "blur")]
    return stored_batch(references), stored_batch(outputs)


def test_values_are_the_metric_functions_values(photo_pairs):
    ref, out = photo_pairs
    values, warnings = measure(ref, out, 255.0, PIXEL_METRICS, DEFAULT, Cache())
    assert warnings == [] and set(values) == set(PIXEL_METRICS)
    x, y = ref.float(), out.float()
    expected = {
        "psnr": psnr(x, y, data_range=255.0),
        "ssim": ssim(x, y, data_range=255.0),
        "ms_ssim": ms_ssim(x, y, data_range=255.0),
        "mse": mse(x, y),
    }
    tolerance = {"psnr": PSNR_TOL, "ssim": SSIM_TOL, "ms_ssim": SSIM_TOL, "mse": 1e-4}
    for metric, value in expected.items():
        assert len(values[metric]) == 2
        np.testing.assert_allclose(values[metric], value.double().numpy(), rtol=0, atol=tolerance[metric])
    assert values["psnr"][0] != values["psnr"][1]


def test_sr_paper_values_are_the_metrics_of_the_cropped_y(photo_pairs):
    ref, out = photo_pairs
    convention = resolve_convention("sr-paper", crop=4)
    values, _ = measure(ref, out, 255.0, ("psnr", "ssim"), convention, Cache())
    x = rgb_to_y(ref[..., 4:-4, 4:-4], data_range=255.0, dtype=torch.float64)
    y = rgb_to_y(out[..., 4:-4, 4:-4], data_range=255.0, dtype=torch.float64)
    np.testing.assert_allclose(values["psnr"], psnr(x, y, data_range=255.0).numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(values["ssim"], ssim(x, y, data_range=255.0).numpy(), rtol=0, atol=1e-9)


def test_only_the_metrics_asked_for_are_measured(photo_pairs):
    ref, out = photo_pairs
    values, _ = measure(ref, out, 255.0, ("ms_ssim",), DEFAULT, Cache())
    assert list(values) == ["ms_ssim"]
    values, _ = measure(ref, out, 255.0, ("mse", "ssim"), DEFAULT, Cache())
    assert sorted(values) == ["mse", "ssim"]


def test_smaller_than_the_window_leaves_ssim_and_ms_ssim_null_with_a_warning():
    ref = stored_batch([real_image("chelsea.png")[:8, :10]])
    out = stored_batch([degrade(real_image("chelsea.png"), "noise")[:8, :10]])
    values, warnings = measure(ref, out, 255.0, PIXEL_METRICS, DEFAULT, Cache())
    assert values["ssim"] == [None] and values["ms_ssim"] == [None]
    assert values["psnr"][0] == pytest.approx(psnr(ref.float(), out.float(), data_range=255.0).item())
    assert warnings == ["image is 10x8, smaller than the 11 px SSIM window: ssim and ms_ssim left null"]


def test_ms_ssim_is_null_below_161_px_with_the_reason(photo_pairs):
    ref, out = (batch[:, :, :160, :] for batch in photo_pairs)
    values, warnings = measure(ref, out, 255.0, ("ssim", "ms_ssim"), DEFAULT, Cache())
    assert values["ms_ssim"] == [None, None]
    np.testing.assert_allclose(
        values["ssim"], ssim(ref.float(), out.float(), data_range=255.0).double().numpy(), atol=SSIM_TOL
    )
    assert warnings == [
        "ms_ssim left null: 5-scale MS-SSIM needs >= 161 px on the short side, got 160 "
        "(set ms_ssim_scales lower to score small images)"
    ]
    values, warnings = measure(ref, out, 255.0, ("ms_ssim",), DEFAULT, Cache(), ms_ssim_scales=3)
    expected = ms_ssim(ref.float(), out.float(), data_range=255.0, scales=3).double().numpy()
    assert warnings == [] and np.allclose(values["ms_ssim"], expected, atol=SSIM_TOL)


def test_a_crop_larger_than_the_image_is_an_image_error():
    ref = stored_batch([real_image("astronaut.png")[:20, :30]])
    with pytest.raises(ImageError, match=r"too small to crop 10 px from each border\. Use a smaller --crop"):
        measure(ref, ref, 255.0, ("psnr",), resolve_convention("sr-paper", crop=10), Cache())
    values, _ = measure(ref, ref, 255.0, ("mse",), resolve_convention("sr-paper", crop=9), Cache())
    assert values["mse"] == [0.0]


def test_the_crop_error_gives_the_size_as_width_x_height():
    ref = stored_batch([real_image("astronaut.png")[:20, :30]])
    with pytest.raises(ImageError, match=r"the reference is 30x20, too small"):
        measure(ref, ref, 255.0, ("psnr",), resolve_convention("sr-paper", crop=10), Cache())


def test_lpips_is_null_on_volumes_and_the_pixel_metrics_are_not():
    volume = torch.from_numpy(np.stack([real_image("camera.png")[:40, :40]] * 12))[None, None]
    noisy = torch.from_numpy(np.stack([degrade(real_image("camera.png")[:40, :40], "noise")] * 12))[
        None, None
    ]
    values, warnings = measure(volume, noisy, 255.0, ("psnr", "ssim", "lpips"), DEFAULT, Cache())
    assert values["lpips"] == [None]
    assert values["psnr"][0] is not None and values["ssim"][0] is not None
    assert warnings == ["lpips left null: LPIPS is defined on 2-D images only, not on volumes"]


def test_lpips_is_the_lpips_of_the_cropped_rgb(photo_pairs, squeeze_network):
    ref, out = photo_pairs
    built = []
    cache = Cache(build_network=lambda device: built.append(device) or squeeze_network)
    convention = resolve_convention("sr-paper", crop=4)
    values, warnings = measure(ref, out, 255.0, ("lpips",), convention, cache)
    with torch.inference_mode():
        expected = lpips(
            ref[..., 4:-4, 4:-4].float(),
            out[..., 4:-4, 4:-4].float(),
            data_range=255.0,
            network=squeeze_network,
        )
    assert warnings == []
    np.testing.assert_allclose(values["lpips"], expected.double().numpy(), rtol=0, atol=1e-5)
    measure(ref, out, 255.0, ("lpips",), convention, cache)
    assert built == [torch.device("cpu")]


def test_the_cache_builds_each_window_once_and_needs_a_network_builder():
    cache = Cache()
    window = cache.window(torch.float64, torch.device("cpu"))
    assert cache.window(torch.float64, torch.device("cpu")) is window
    assert cache.window(torch.float32, torch.device("cpu")).dtype == torch.float32
    ref = stored_batch([real_image("astronaut.png")[:32, :32]])
    with pytest.raises(RuntimeError, match="no network builder"):
        measure(ref, ref, 255.0, ("lpips",), DEFAULT, cache)
