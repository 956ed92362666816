"""The named conventions against the tools they name, per pair on real photos (RGB, gray; five degradations).

skimage-defaults is checked against scikit-image itself. matlab and matlab-downsampled are checked against a
transcription of Zhou Wang's MATLAB code (`ssim_index.m`, `msssim.m`, `ssim.m`, with MATLAB's `rgb2gray`,
`fspecial`, `filter2`, `imfilter` and `round`) into numpy and scipy, written here from the MATLAB formulas:
full 2-D correlations with the 2-D window, padding by `np.pad`, no code shared with the separable torch
filtering of `pipeline.metrics.structural` (MATLAB itself is not available). default and sr-paper are
checked to give what `pipeline.metrics.ssim` and `pipeline.metrics.psnr` give, as before the table existed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import (
    DEGRADATIONS,
    PSNR_TOL,
    SSIM_TOL,
    degrade,
    image_batch,
    matlab_y,
    real_image,
    skimage_ssim,
)
from PIL import Image
from scipy.signal import correlate2d
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.conventions import resolve_convention
from pipeline.measure import Cache, measure
from pipeline.metrics.psnr import mse, psnr_from_mse
from pipeline.metrics.ssim import ssim_and_ms_ssim
from pipeline.metrics.structural import StructuralSpec
from pipeline.metrics.structural import structural_similarity as spec_similarity

MPL_SAMPLE_DATA = Path(matplotlib.get_data_path()) / "sample_data"
METRICS = ("psnr", "ssim", "ms_ssim")

# Photo -> why it is here. Sides are H x W; f is ssim.m's downsampling factor.
PHOTOS = {
    "astronaut": "RGB 512 x 512, f = 2",
    "coffee": "RGB 400 x 600, f = 2",
    "chelsea": "RGB 300 x 451 (odd width), f = 1",
    "grace_hopper": "RGB 600 x 512 from matplotlib's sample data, f = 2",
    "retina-640x701": "RGB crop, 640 / 256 = 2.5: MATLAB's round gives f = 3, Python's round 2",
    "camera": "gray 512 x 512, f = 2",
    "coins": "gray 303 x 384 (odd height), f = 1",
    "camera-301x423": "gray crop, both sides odd at the first MS-SSIM levels",
}
PAIRS = [(photo, kind) for photo in PHOTOS for kind in DEGRADATIONS]


@cache
def photo(name: str) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3), read-only."""
    if name == "grace_hopper":
        image = np.asarray(Image.open(MPL_SAMPLE_DATA / "grace_hopper.jpg").convert("RGB"))
    elif name == "retina-640x701":
        image = real_image("retina.jpg")[380:1020, 350:1051]
    elif name == "camera-301x423":
        image = real_image("camera.png")[100:401, 50:473]
    else:
        image = real_image(f"{name}.png")
    image = np.ascontiguousarray(image)
    image.flags.writeable = False
    return image


@cache
def pair(name: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    reference = photo(name)
    return reference, degrade(reference, kind)


def measured(
    reference: np.ndarray, output: np.ndarray, convention: str, *, crop: int = 0, metrics: tuple = METRICS
) -> tuple[dict, list[str]]:
    """`measure` on one pair of stored uint8 images: ({metric: value}, warnings)."""
    values, warnings = measure(
        image_batch(reference, torch.uint8),
        image_batch(output, torch.uint8),
        255.0,
        metrics,
        resolve_convention(convention, crop=crop),
        Cache(),
    )
    return {name: column[0] for name, column in values.items()}, warnings


# Zhou Wang's MATLAB code, in numpy


def matlab_round(x: np.ndarray | float) -> np.ndarray:
    """MATLAB's round: halves away from zero (numpy's and Python's round halves to even)."""
    return np.where(np.asarray(x) >= 0, np.floor(np.asarray(x) + 0.5), np.ceil(np.asarray(x) - 0.5))


def rgb2gray(image: np.ndarray) -> np.ndarray:
    """MATLAB's rgb2gray of uint8 RGB: the weighted sum converted back to uint8 (rounded); float64 levels."""
    rgb = image.astype(np.float64)
    gray = 0.298936021293775 * rgb[..., 0] + 0.587043074451121 * rgb[..., 1] + 0.114020904255103 * rgb[..., 2]
    return matlab_round(gray)


def fspecial_gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """fspecial('gaussian', size, sigma): (size, size), values below eps * max set to 0, summing to 1."""
    half = (size - 1) / 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    window = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    window[window < np.finfo(np.float64).eps * window.max()] = 0
    return window / window.sum()


def filter2_valid(window: np.ndarray, image: np.ndarray) -> np.ndarray:
    """filter2(window, image, 'valid'): 2-D correlation where the window fits."""
    return correlate2d(image, window, mode="valid")


def imfilter_symmetric_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """imfilter(image, kernel, 'symmetric', 'same'): correlation, the kernel's centre at floor((size + 1) / 2)
    (1-based), the image mirrored with its edge pixel repeated."""
    rows, cols = kernel.shape
    top, left = (rows + 1) // 2 - 1, (cols + 1) // 2 - 1
    padded = np.pad(image, ((top, rows - 1 - top), (left, cols - 1 - left)), mode="symmetric")
    return correlate2d(padded, kernel, mode="valid")


def ssim_index_new(img1: np.ndarray, img2: np.ndarray) -> tuple[float, float]:
    """ssim_index_new.m with its defaults (K = [0.01 0.03], L = 255): (mean SSIM map, mean cs map)."""
    window = fspecial_gaussian()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filter2_valid(window, img1), filter2_valid(window, img2)
    sigma1_sq = filter2_valid(window, img1 * img1) - mu1 * mu1
    sigma2_sq = filter2_valid(window, img2 * img2) - mu2 * mu2
    sigma12 = filter2_valid(window, img1 * img2) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1 * mu1 + mu2 * mu2 + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    cs_map = (2 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2)
    return float(ssim_map.mean()), float(cs_map.mean())


def msssim(img1: np.ndarray, img2: np.ndarray, level: int = 5) -> float:
    """msssim.m with its defaults ('product'); -Inf where it refuses the image."""
    weight = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    if min(img1.shape) / 2 ** (level - 1) < 11:
        return -np.inf
    mssim, mcs = [], []
    downsample_filter = np.ones((2, 2)) / 4
    for _ in range(level):
        ssim_value, cs_value = ssim_index_new(img1, img2)
        mssim.append(ssim_value)
        mcs.append(cs_value)
        img1 = imfilter_symmetric_same(img1, downsample_filter)[::2, ::2]
        img2 = imfilter_symmetric_same(img2, downsample_filter)[::2, ::2]
    return float(np.prod(np.array(mcs[:-1]) ** weight[:-1]) * mssim[-1] ** weight[-1])


def ssim_m(img1: np.ndarray, img2: np.ndarray) -> float:
    """ssim.m (2009): automatic downsampling by f = max(1, round(min(M, N) / 256)), then ssim_index.m."""
    f = int(max(1, matlab_round(min(img1.shape) / 256)))
    if f > 1:
        lpf = np.ones((f, f)) / f**2
        img1 = imfilter_symmetric_same(img1, lpf)[::f, ::f]
        img2 = imfilter_symmetric_same(img2, lpf)[::f, ::f]
    return ssim_index_new(img1, img2)[0]


def matlab_psnr(img1: np.ndarray, img2: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((img1 - img2) ** 2)))


def matlab_gray_levels(image: np.ndarray) -> np.ndarray:
    """What the MATLAB scripts see: rgb2gray of RGB, gray as stored; float64."""
    return rgb2gray(image) if image.ndim == 3 else image.astype(np.float64)


@cache
def matlab_reference(name: str, kind: str) -> dict[str, float]:
    """PSNR, ssim_index.m, ssim.m and msssim.m of one pair (shared by the matlab conventions' tests)."""
    reference, output = pair(name, kind)
    img1, img2 = matlab_gray_levels(reference), matlab_gray_levels(output)
    return {
        "psnr": matlab_psnr(img1, img2),
        "ssim_index": ssim_index_new(img1, img2)[0],
        "ssim_m": ssim_m(img1, img2),
        "ms_ssim": msssim(img1, img2),
    }


# skimage-defaults


@pytest.mark.parametrize(("name", "kind"), PAIRS)
def test_skimage_defaults_is_scikit_image_with_its_defaults(name, kind):
    reference, output = pair(name, kind)
    values, warnings = measured(reference, output, "skimage-defaults")
    channel_axis = {"channel_axis": -1} if reference.ndim == 3 else {}
    expected_ssim = structural_similarity(reference, output, data_range=255, **channel_axis)
    assert values["ssim"] == pytest.approx(expected_ssim, abs=SSIM_TOL, rel=0)
    assert values["psnr"] == pytest.approx(
        peak_signal_noise_ratio(reference, output, data_range=255), abs=PSNR_TOL
    )
    assert values["ms_ssim"] is None
    assert warnings == ["ms_ssim left null: scikit-image has no MS-SSIM (convention skimage-defaults)"]


def test_skimage_defaults_computes_no_ms_ssim_only_when_asked_for_it():
    values, warnings = measured(*pair("camera", "noise"), "skimage-defaults", metrics=("ssim",))
    assert set(values) == {"ssim"} and values["ssim"] is not None and warnings == []


# matlab and matlab-downsampled


@pytest.mark.parametrize(("name", "kind"), PAIRS)
def test_matlab_is_ssim_index_and_msssim_on_rgb2gray(name, kind):
    expected = matlab_reference(name, kind)
    values, warnings = measured(*pair(name, kind), "matlab")
    assert warnings == []
    assert values["psnr"] == pytest.approx(expected["psnr"], abs=PSNR_TOL)
    assert values["ssim"] == pytest.approx(expected["ssim_index"], abs=SSIM_TOL, rel=0)
    assert values["ms_ssim"] == pytest.approx(expected["ms_ssim"], abs=SSIM_TOL, rel=0)


@pytest.mark.parametrize(("name", "kind"), PAIRS)
def test_matlab_downsampled_is_ssim_m_with_its_automatic_downsampling(name, kind):
    expected = matlab_reference(name, kind)
    values, warnings = measured(*pair(name, kind), "matlab-downsampled")
    assert warnings == []
    assert values["psnr"] == pytest.approx(expected["psnr"], abs=PSNR_TOL)
    assert values["ssim"] == pytest.approx(expected["ssim_m"], abs=SSIM_TOL, rel=0)
    assert values["ms_ssim"] == pytest.approx(expected["ms_ssim"], abs=SSIM_TOL, rel=0)


def ssim_m_with_factor(name: str, kind: str, f: int) -> float:
    """ssim.m's SSIM of one pair with the downsampling factor forced to `f`."""
    lpf = np.ones((f, f)) / f**2
    img1, img2 = (
        imfilter_symmetric_same(matlab_gray_levels(image), lpf)[::f, ::f] for image in pair(name, kind)
    )
    return ssim_index_new(img1, img2)[0]


def test_the_photos_exercise_the_downsampling_and_matlabs_rounding():
    """Guards the per-pair tests: where f > 1 ssim.m's value is not ssim_index.m's, and on the 640 px crop
    f = 3 (MATLAB's round of 2.5) gives another value than f = 2 (Python's round)."""
    for name in ("astronaut", "coffee", "grace_hopper", "retina-640x701", "camera"):
        expected = matlab_reference(name, "blur")
        assert abs(expected["ssim_m"] - expected["ssim_index"]) > 1e-3
        assert expected["ssim_m"] == pytest.approx(
            ssim_m_with_factor(name, "blur", 3 if "640" in name else 2)
        )
    retina = matlab_reference("retina-640x701", "jpeg")["ssim_m"]
    assert abs(retina - ssim_m_with_factor("retina-640x701", "jpeg", 2)) > 1e-3


@pytest.mark.parametrize("convention", ["matlab", "matlab-downsampled"])
def test_ms_ssim_is_null_where_msssim_m_refuses_the_image(convention):
    """msssim.m returns -Inf when the short side / 16 is below the 11 px window (here 175 px); at 176 px it
    gives a value, and ours agrees."""
    reference, output = pair("astronaut", "jpeg")
    small = (reference[:175, :240], output[:175, :240])
    assert msssim(*(rgb2gray(image) for image in small)) == -np.inf
    values, warnings = measured(*small, convention)
    assert values["ms_ssim"] is None and values["ssim"] is not None
    assert warnings == [
        "ms_ssim left null: 5-scale MS-SSIM needs >= 176 px on the short side under this convention, got 175 "
        "(set ms_ssim_scales lower)"
    ]
    fits = (reference[:176, :240], output[:176, :240])
    values, warnings = measured(*fits, convention)
    assert warnings == []
    expected = msssim(*(rgb2gray(image) for image in fits))
    assert values["ms_ssim"] == pytest.approx(expected, abs=SSIM_TOL, rel=0)


def test_matlab_gray_is_rgb2gray_rounded_half_away_from_zero():
    """The oracle's rounding is MATLAB's: halves away from zero, unlike numpy's round."""
    assert matlab_round(np.array([0.5, 1.5, 2.5, -0.5])).tolist() == [1.0, 2.0, 3.0, -1.0]
    red = np.array([[[255, 0, 0], [0, 0, 1]]], dtype=np.uint8)
    assert rgb2gray(red).tolist() == [[76.0, 0.0]]


def test_the_ssim_index_transcription_is_scikit_images_gaussian_ssim():
    """A third opinion on the oracle: scikit-image with Wang's settings computes ssim_index.m's mean."""
    for name, kind in [("camera", "jpeg"), ("coins", "noise"), ("astronaut", "bicubic4")]:
        img1, img2 = (matlab_gray_levels(image) for image in pair(name, kind))
        assert ssim_index_new(img1, img2)[0] == pytest.approx(skimage_ssim(img1, img2, 255.0), abs=1e-10)


# default and sr-paper are what they were


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_default_is_pipeline_metrics_ssim_on_the_stored_values(name):
    reference, output = pair(name, "jpeg")
    values, warnings = measured(reference, output, "default")
    x, y = image_batch(reference, torch.float32), image_batch(output, torch.float32)
    ssim_value, ms_value = ssim_and_ms_ssim(x, y, data_range=255.0)
    assert warnings == []
    assert values["ssim"] == ssim_value.item() and values["ms_ssim"] == ms_value.item()
    assert values["psnr"] == psnr_from_mse(mse(x, y), data_range=255.0).item()
    general_ssim, general_ms = spec_similarity(x.double(), y.double(), StructuralSpec(), data_range=255.0)
    assert values["ssim"] == pytest.approx(general_ssim.item(), abs=SSIM_TOL, rel=0)
    assert values["ms_ssim"] == pytest.approx(general_ms.item(), abs=SSIM_TOL, rel=0)


def test_sr_paper_is_pipeline_metrics_ssim_on_basicsrs_cropped_y():
    reference, output = pair("coffee", "bicubic4")
    values, warnings = measured(reference, output, "sr-paper", crop=4)
    y_ref, y_out = (matlab_y(image)[4:-4, 4:-4] for image in (reference, output))
    ssim_value, ms_value = ssim_and_ms_ssim(
        torch.from_numpy(y_ref)[None, None], torch.from_numpy(y_out)[None, None], data_range=255.0
    )
    assert warnings == []
    assert values["ssim"] == pytest.approx(ssim_value.item(), abs=1e-12, rel=0)
    assert values["ms_ssim"] == pytest.approx(ms_value.item(), abs=1e-12, rel=0)
    assert values["psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean((y_ref - y_out) ** 2)), abs=1e-9)
    assert values["ssim"] == pytest.approx(skimage_ssim(y_ref, y_out, 255.0), abs=SSIM_TOL, rel=0)
