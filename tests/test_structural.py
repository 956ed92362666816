"""pipeline/metrics/structural.py: its filtering, window, statistics, downsampling factor and size limits,
each against scipy, numpy or a direct formula, on crops of real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import real_image
from scipy import ndimage
from scipy.signal import correlate2d
from scipy.signal.windows import gaussian

from pipeline.metrics.ssim import ms_ssim_min_side
from pipeline.metrics.structural import (
    StructuralSpec,
    Window,
    downsample_factor,
    filter_same_or_valid,
    min_side,
    structural_similarity,
)

PADDINGS = ("valid", "symmetric", "reflect", "replicate", "zeros")
NUMPY_PAD_MODE = {"symmetric": "symmetric", "reflect": "reflect", "replicate": "edge", "zeros": "constant"}
NDIMAGE_MODE = {"symmetric": "reflect", "reflect": "mirror", "replicate": "nearest", "zeros": "constant"}
TAPS = {
    "gaussian-11": Window("gaussian", 11, 1.5).taps(torch.float64),
    "gaussian-7-sigma-2": Window("gaussian", 7, 2.0).taps(torch.float64),
    "uniform-2": Window("uniform", 2).taps(torch.float64),
    "uniform-3": Window("uniform", 3).taps(torch.float64),
    "uniform-4": Window("uniform", 4).taps(torch.float64),
}


@pytest.fixture(scope="module")
def channels() -> np.ndarray:
    """(2, 61, 74) float64: a gray and a red-channel crop of real photos (odd and even sides)."""
    return np.stack(
        [real_image("camera.png")[200:261, 100:174], real_image("astronaut.png")[50:111, 80:154, 0]]
    )


def numpy_reference(image: np.ndarray, taps: np.ndarray, padding: str) -> np.ndarray:
    """2-D correlation with outer(taps, taps) after np.pad; S taps centred at floor((S + 1) / 2), counted
    from 1 (MATLAB's imfilter)."""
    kernel = np.outer(taps, taps)
    if padding != "valid":
        before = (taps.size + 1) // 2 - 1
        image = np.pad(image, (before, taps.size - 1 - before), mode=NUMPY_PAD_MODE[padding])
    return correlate2d(image, kernel, mode="valid")


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("taps_name", TAPS)
def test_filtering_is_numpy_pad_and_a_2d_correlation(channels, padding, taps_name):
    taps = TAPS[taps_name]
    filtered = filter_same_or_valid(torch.from_numpy(channels.astype(np.float64))[None], taps, padding)[0]
    for channel, result in zip(channels.astype(np.float64), filtered.numpy(), strict=True):
        expected = numpy_reference(channel, taps.numpy(), padding)
        assert result.shape == expected.shape
        np.testing.assert_allclose(result, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("padding", PADDINGS[1:])
@pytest.mark.parametrize("taps_name", ["gaussian-11", "gaussian-7-sigma-2", "uniform-3"])
def test_same_filtering_of_odd_windows_is_scipy_ndimage(channels, padding, taps_name):
    taps = TAPS[taps_name]
    filtered = filter_same_or_valid(torch.from_numpy(channels.astype(np.float64))[None], taps, padding)[0]
    for channel, result in zip(channels.astype(np.float64), filtered.numpy(), strict=True):
        expected = ndimage.correlate(
            channel, np.outer(taps.numpy(), taps.numpy()), mode=NDIMAGE_MODE[padding]
        )
        np.testing.assert_allclose(result, expected, rtol=0, atol=1e-10)


def test_even_windows_centre_as_matlab_imfilter():
    """imfilter(x, ones(1, 2) / 2, 'symmetric', 'same') averages each pixel with the next; the last with
    itself."""
    row = torch.tensor([[[[0.0, 2.0, 4.0, 10.0]]]], dtype=torch.float64)
    taps = torch.tensor([0.5, 0.5], dtype=torch.float64)
    horizontal = filter_same_or_valid(row.expand(1, 1, 2, 4), taps, "symmetric")[0, 0, 0]
    assert horizontal.tolist() == [1.0, 3.0, 7.0, 10.0]


@pytest.mark.parametrize(("size", "sigma"), [(11, 1.5), (7, 1.5), (9, 2.0), (5, 0.8)])
def test_gaussian_taps_are_scipys_gaussian_window_normalised(size, sigma):
    taps = Window("gaussian", size, sigma).taps(torch.float64).numpy()
    expected = gaussian(size, std=sigma)
    np.testing.assert_allclose(taps, expected / expected.sum(), rtol=0, atol=1e-15)
    offsets = np.arange(size) - (size - 1) / 2
    direct = np.exp(-(offsets**2) / (2 * sigma**2))
    np.testing.assert_allclose(taps, direct / direct.sum(), rtol=0, atol=1e-15)


def test_the_gaussian_window_is_fspecials_2d_gaussian():
    half = 5
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    fspecial = np.exp(-(x**2 + y**2) / (2 * 1.5**2))
    taps = Window("gaussian", 11, 1.5).taps(torch.float64).numpy()
    np.testing.assert_allclose(np.outer(taps, taps), fspecial / fspecial.sum(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("size", [2, 3, 7, 8])
def test_uniform_taps(size):
    taps = Window("uniform", size).taps(torch.float32, "cpu")
    assert taps.dtype == torch.float32 and taps.tolist() == pytest.approx([1 / size] * size, abs=1e-7)


@pytest.mark.parametrize("sample", [False, True])
def test_population_and_sample_statistics(sample):
    """On a 7 x 7 image the 7 x 7 uniform 'valid' map is one pixel: SSIM from numpy's mean, var and cov with
    ddof 0 (population) or 1 (sample)."""
    x = real_image("camera.png")[300:307, 200:207].astype(np.float64)
    y = real_image("camera.png")[302:309, 203:210].astype(np.float64)
    spec = StructuralSpec(window=Window("uniform", 7), sample_covariance=sample)
    value, _ = structural_similarity(
        torch.from_numpy(x)[None, None],
        torch.from_numpy(y)[None, None],
        spec,
        data_range=255.0,
        with_ms_ssim=False,
    )
    ddof = 1 if sample else 0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(ddof=ddof), y.var(ddof=ddof)
    cov = np.cov(x.ravel(), y.ravel(), ddof=ddof)[0, 1]
    expected = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert value.item() == pytest.approx(expected, abs=1e-12, rel=0)
    other = StructuralSpec(window=Window("uniform", 7), sample_covariance=not sample)
    assert structural_similarity(
        torch.from_numpy(x)[None, None],
        torch.from_numpy(y)[None, None],
        other,
        data_range=255.0,
        with_ms_ssim=False,
    )[0].item() != pytest.approx(expected, abs=1e-6)


def half_away_from_zero(value: float) -> int:
    return int(np.floor(value + 0.5))


@pytest.mark.parametrize("short", [1, 100, 127, 128, 255, 383, 384, 511, 512, 640, 641, 767, 896, 1152, 1408])
def test_downsample_factor(short):
    assert downsample_factor(short, 2000) == downsample_factor(2000, short) == max(1, round(short / 256))
    matlab = downsample_factor(short, 2000, rounding="half_away")
    assert (
        matlab
        == downsample_factor(2000, short, rounding="half_away")
        == max(1, half_away_from_zero(short / 256))
    )


def test_downsample_factor_differs_only_at_odd_halves():
    differing = [
        short
        for short in range(1, 3000)
        if downsample_factor(short, short) != downsample_factor(short, short, rounding="half_away")
    ]
    assert differing == [640, 1152, 1664, 2176, 2688]  # min side / 256 = 2.5, 4.5, 6.5, 8.5, 10.5


def computable(spec: StructuralSpec, side: int, scales: int) -> bool:
    """Whether every level has map pixels (finite values) on a side x side image."""
    x = torch.from_numpy(real_image("camera.png")[:side, :side].astype(np.float64))[None, None]
    try:
        ssim_value, ms_value = structural_similarity(
            x, x.flip(-1), spec, data_range=255.0, with_ms_ssim=scales > 1, scales=scales
        )
    except RuntimeError:  # a filter or a pooling larger than its input
        return False
    return bool(torch.isfinite(ssim_value).all() and (ms_value is None or torch.isfinite(ms_value).all()))


@pytest.mark.parametrize(
    "spec",
    [
        StructuralSpec(),
        StructuralSpec(pyramid="average_pool"),
        StructuralSpec(
            window=Window("uniform", 7), padding="symmetric", sample_covariance=True, map_border=3
        ),
        StructuralSpec(window=Window("gaussian", 7), padding="zeros", map_border=2, pyramid="average_pool"),
    ],
    ids=["default", "average-pool", "skimage", "zeros-border"],
)
@pytest.mark.parametrize("scales", [1, 3, 5])
def test_min_side_is_the_smallest_computable_side(spec, scales):
    side = min_side(spec, scales)
    assert computable(spec, side, scales) and not computable(spec, side - 1, scales)


def test_min_side_values():
    assert min_side(StructuralSpec(), 5) == ms_ssim_min_side(5) == 161
    assert min_side(StructuralSpec(window=Window("uniform", 7), padding="symmetric", map_border=3)) == 7
    assert min_side(StructuralSpec(pyramid="average_pool"), 5) == 176


def test_min_side_of_the_matlab_pyramid_is_what_msssim_m_accepts():
    """msssim.m refuses min(M, N) / 2^(level - 1) < 11 although 161 px could be computed."""
    spec = StructuralSpec(pyramid="matlab", relu_cs=False)
    assert [min_side(spec, scales) for scales in (1, 2, 3, 4, 5)] == [11, 22, 44, 88, 176]
    assert computable(spec, 161, 5)  # what the formulas could do, not what msssim.m does
