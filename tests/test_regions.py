"""Where a pair is worst: the window choice of the report's crops, on real photos with a damaged patch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import degrade, real_image
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter

from pipeline.html.regions import (
    CROP_SIDE,
    RegionKind,
    Window,
    dissimilarity,
    local_ssim,
    region_kind,
    squared_error,
    worst_window,
)

PATCH = Window(top=300, left=180, height=48, width=48)


def covers(window: Window, patch: Window) -> bool:
    return (
        window.top <= patch.top
        and window.left <= patch.left
        and window.top + window.height >= patch.top + patch.height
        and window.left + window.width >= patch.left + patch.width
    )


def with_patch(background: np.ndarray, patch_pixels: np.ndarray) -> np.ndarray:
    """A degraded photo with `patch_pixels` pasted over `PATCH`, as float64."""
    out = background.astype(np.float64)
    out[PATCH.top : PATCH.top + PATCH.height, PATCH.left : PATCH.left + PATCH.width] = patch_pixels
    return out


def as_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return real_image("astronaut.png")


def test_lowest_local_ssim_window_covers_a_blurred_patch(photo: np.ndarray) -> None:
    blurred = gaussian_filter(photo.astype(np.float64), sigma=(3, 3, 0))
    out = with_patch(degrade(photo, "jpeg"), PATCH.crop(blurred))
    values = local_ssim(as_float(photo), out, 255.0)
    window = worst_window(dissimilarity(values))
    assert (window.height, window.width) == (CROP_SIDE, CROP_SIDE)
    assert covers(window, PATCH), window


def test_highest_local_error_window_covers_a_noisy_patch(photo: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(PATCH.crop(photo) + rng.normal(0, 40, PATCH.crop(photo).shape), 0, 255)
    out = with_patch(degrade(photo, "noise"), noisy)
    window = worst_window(squared_error(as_float(photo), out))
    assert covers(window, PATCH), window


def test_the_two_maps_find_different_damage(photo: np.ndarray) -> None:
    """Blurred grass costs little squared error but much local SSIM; a smooth brightness bump in the sky costs
    squared error but hardly any SSIM: each map's window finds its own damage."""
    gray = real_image("camera.png").astype(np.float64)[..., None]
    grass = Window(top=330, left=420, height=48, width=48)
    out = gray.copy()
    out[grass.top : grass.top + 48, grass.left : grass.left + 48] = grass.crop(
        gaussian_filter(gray, (2, 2, 0))
    )
    rows, cols = np.mgrid[:512, :512]
    out[..., 0] += 30 * np.exp(-((rows - 30) ** 2 + (cols - 400) ** 2) / (2 * 12**2))
    assert covers(worst_window(dissimilarity(local_ssim(gray, out, 255.0))), grass)
    assert covers(worst_window(squared_error(gray, out)), Window(top=30, left=400, height=1, width=1))


def test_windows_stay_out_of_the_conventions_border() -> None:
    badness = np.zeros((300, 400))
    badness[:20, :20] = 10.0  # worst in the corner the convention crops
    badness[150:170, 200:220] = 1.0
    assert worst_window(badness, border=0) == Window(0, 0, CROP_SIDE, CROP_SIDE)
    window = worst_window(badness, border=24)
    assert window.top >= 24 and window.left >= 24 and covers(window, Window(150, 200, 20, 20))


def test_a_small_image_is_one_window() -> None:
    assert worst_window(np.ones((40, 70))) == Window(0, 0, 40, 70)
    assert worst_window(np.ones((40, 70)), border=30) == Window(0, 0, 40, 70)


@settings(max_examples=60, deadline=None)
@given(
    badness=arrays(
        np.float64,
        st.tuples(st.integers(1, 24), st.integers(1, 24)),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    ),
    side=st.integers(1, 12),
)
def test_worst_window_has_the_highest_mean_of_all_windows(badness: np.ndarray, side: int) -> None:
    window = worst_window(badness, side=side)
    rows, cols = min(side, badness.shape[0]), min(side, badness.shape[1])
    means = sliding_window_view(badness, (rows, cols)).mean(axis=(-2, -1))
    assert (window.height, window.width) == (rows, cols)
    assert window.crop(badness).mean() == pytest.approx(means.max(), abs=1e-6)


def test_each_metric_has_a_map() -> None:
    assert region_kind("psnr") == region_kind("mse") == RegionKind.ERROR
    assert region_kind("ssim") == region_kind("ms_ssim") == region_kind("lpips") == RegionKind.STRUCTURE
