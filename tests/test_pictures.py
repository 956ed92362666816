"""Pictures of a pair: lossless 1:1 crops of the right windows, whole pictures within a stated size bound."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import real_image
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipeline.html.display import ReadOptions
from pipeline.html.pictures import (
    FULL_SIDE,
    OVER_BUDGET,
    PICTURE_BUDGET,
    PairFiles,
    PictureBudget,
    RegionRequest,
    Source,
    pair_pictures,
    png_uri,
    png_uri_bound,
    whole_pictures,
)
from pipeline.html.regions import RegionKind, Window

ERROR_REGION = RegionRequest(RegionKind.ERROR, False, ("psnr",))
STRUCTURE_REGION = RegionRequest(RegionKind.STRUCTURE, False, ("ssim", "lpips"))


def decoded(data_uri: str) -> np.ndarray:
    """The pixels of a PNG data URI (a palette image as its palette indices)."""
    prefix = "data:image/png;base64,"
    assert data_uri.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_uri[len(prefix) :]))))


def save(path: Path, pixels: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return str(path)


def inside(window: Window, row: int, col: int) -> bool:
    return window.top <= row < window.top + window.height and window.left <= col < window.left + window.width


@pytest.fixture
def damaged_pair(tmp_path: Path) -> tuple[str, str, np.ndarray, np.ndarray]:
    """A real photo and an output with mild noise everywhere, blurred hard over the mission patch."""
    photo = real_image("astronaut.png")
    out = photo + np.random.default_rng(0).normal(0, 3, photo.shape)
    blurred = gaussian_filter(photo.astype(np.float64), (4, 4, 0))
    out[360:420, 160:220] = blurred[360:420, 160:220]
    out = out.round().clip(0, 255).astype(np.uint8)
    return save(tmp_path / "ref.png", photo), save(tmp_path / "out.png", out), photo, out


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    mode=st.sampled_from(["RGB", "L", "P"]),
    seed=st.integers(0, 2**16),
)
def test_the_size_bound_holds_for_incompressible_pixels(
    height: int, width: int, mode: str, seed: int
) -> None:
    channels = 3 if mode == "RGB" else 1
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(noise[..., 0] if channels == 1 else noise)
    if mode == "P":
        image.putpalette(list(range(256)) * 3)
    assert len(png_uri(image)) <= png_uri_bound(height, width, channels)


def test_crops_are_lossless_one_to_one_windows_of_the_files(damaged_pair) -> None:
    ref_path, out_path, photo, out = damaged_pair
    pictures = pair_pictures(
        PairFiles(ref_path, out_path), [ERROR_REGION, STRUCTURE_REGION], ReadOptions(), PICTURE_BUDGET
    )
    (region,) = pictures.regions  # both maps find the blurred patch: one region
    assert region.metrics == ["psnr", "ssim", "lpips"]
    assert region.title == "highest local squared error · lowest local SSIM"
    for region in pictures.regions:
        assert inside(region.window, 390, 190), region.window
        crops = {crop.slot: crop for crop in region.crops}
        assert np.array_equal(decoded(crops["reference"].data_uri), region.window.crop(photo))
        assert np.array_equal(decoded(crops["output"].data_uri), region.window.crop(out))
        assert (crops["reference"].width, crops["reference"].height) == (96, 96)
    wholes = {picture.slot: picture for picture in pictures.wholes}
    assert np.array_equal(decoded(wholes["reference"].data_uri), photo)
    assert not wholes["output"].downscaled and (wholes["output"].width, wholes["output"].height) == (512, 512)
    assert pictures.size == sum(
        len(p.data_uri) for p in [*pictures.wholes, *(c for r in pictures.regions for c in r.crops)]
    )


def test_a_region_against_the_baseline_is_where_the_candidate_got_worse(tmp_path: Path) -> None:
    """Both outputs are blurred over the grass; only the candidate also over the tripod: the candidate's own
    worst window may be either, the window where it got worse is the tripod."""
    photo = real_image("camera.png")
    blurred = gaussian_filter(photo.astype(np.float64), 3).round().astype(np.uint8)
    baseline, candidate = photo.copy(), photo.copy()
    for out in (baseline, candidate):
        out[400:480, 380:480] = blurred[400:480, 380:480]
    candidate[300:360, 250:310] = blurred[300:360, 250:310]
    files = PairFiles(
        save(tmp_path / "ref.png", photo),
        save(tmp_path / "out.png", candidate),
        baseline_out=save(tmp_path / "base.png", baseline),
    )
    against = RegionRequest(RegionKind.STRUCTURE, True, ("ssim",))
    pictures = pair_pictures(files, [against], ReadOptions(), PICTURE_BUDGET)
    (region,) = pictures.regions
    assert region.title == "largest drop of local SSIM against the baseline"
    assert inside(region.window, 330, 280), region.window
    assert [crop.slot for crop in region.crops] == ["reference", "baseline", "output", "ssim"]
    assert np.array_equal(decoded(region.crops[1].data_uri), region.window.crop(baseline))
    assert [picture.slot for picture in pictures.wholes] == [
        "reference",
        "baseline",
        "output",
        "error",
        "ssim",
    ]


def test_requests_for_one_window_are_one_region_and_other_windows_are_not(tmp_path: Path) -> None:
    """Blurred grass costs local SSIM, a smooth brightness bump in the sky squared error: two regions."""
    photo = real_image("camera.png")
    out = photo.astype(np.float64)
    out[330:378, 420:468] = gaussian_filter(out, 2)[330:378, 420:468]
    rows, cols = np.mgrid[:512, :512]
    out += 30 * np.exp(-((rows - 30) ** 2 + (cols - 400) ** 2) / (2 * 12**2))
    files = PairFiles(
        save(tmp_path / "ref.png", photo), save(tmp_path / "out.png", out.round().astype(np.uint8))
    )
    again = RegionRequest(RegionKind.STRUCTURE, False, ("ms_ssim",))
    regions = pair_pictures(
        files, [STRUCTURE_REGION, ERROR_REGION, again], ReadOptions(), PICTURE_BUDGET
    ).regions
    assert [(r.title, r.metrics) for r in regions] == [
        ("lowest local SSIM", ["ssim", "lpips", "ms_ssim"]),
        ("highest local squared error", ["psnr"]),
    ]
    assert inside(regions[0].window, 354, 444) and inside(regions[1].window, 30, 400)
    assert [crop.slot for crop in regions[0].crops] == ["reference", "output", "ssim"]
    assert [crop.slot for crop in regions[1].crops] == ["reference", "output", "error"]


def photo_source(side: int) -> Source:
    return Source("reference", Image.fromarray(real_image("astronaut.png")[:side, :side]))


def test_whole_pictures_are_downscaled_to_fit_their_allowance_and_say_so() -> None:
    sources = [photo_source(512)]
    (full,) = whole_pictures(sources, 10**8)
    assert not full.downscaled and full.width == 512
    allowance = len(full.data_uri) // 3
    (smaller,) = whole_pictures(sources, allowance)
    assert smaller.downscaled and (smaller.full_width, smaller.full_height) == (512, 512)
    assert len(smaller.data_uri) <= allowance and 32 <= smaller.width < 512
    (none,) = whole_pictures(sources, 1000)
    assert none.data_uri is None and OVER_BUDGET in none.note


def test_whole_pictures_are_at_most_full_side() -> None:
    wide = Source("output", Image.fromarray(np.zeros((40, FULL_SIDE + 300), dtype=np.uint8)))
    (picture,) = whole_pictures([wide], 10**8)
    assert picture.width == FULL_SIDE and picture.downscaled


@pytest.mark.parametrize("allowance", [0, 20_000, 150_000, 600_000, 3_000_000])
def test_a_pair_never_takes_more_than_its_allowance(damaged_pair, allowance: int) -> None:
    ref_path, out_path, _, _ = damaged_pair
    pictures = pair_pictures(PairFiles(ref_path, out_path), [ERROR_REGION], ReadOptions(), allowance)
    assert pictures.size <= allowance
    shown = [p for p in [*pictures.wholes, *pictures.regions[0].crops] if p.data_uri]
    missing = [p for p in [*pictures.wholes, *pictures.regions[0].crops] if not p.data_uri]
    assert all(OVER_BUDGET in p.note for p in missing)
    if allowance == 0:
        assert not shown
    if allowance == 3_000_000:
        assert not missing and not any(p.downscaled for p in shown)


def test_the_budget_passes_what_a_pair_leaves_to_the_next() -> None:
    budget = PictureBudget(1000, 4)
    assert budget.share() == 250
    budget.spend(50)
    assert budget.share() == 950 // 3
    for _ in range(3):
        budget.spend(budget.share())
    assert budget.left >= 0 and budget.pairs_left == 0
