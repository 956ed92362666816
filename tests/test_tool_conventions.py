"""The piq, torchmetrics and pyiqa conventions: `measure` under each gives, per pair of real photos, what the
library itself gives with its default arguments on the 8-bit images scaled to [0, 1] (data_range=1.0 where
an argument takes it); PSNR within 1e-4 dB, SSIM and MS-SSIM within 1e-5.

piq and torchmetrics compute in their inputs' dtype; they are given float64 here, so that the tests check the
definition rather than float32 rounding (their float32 results differ from it by up to ~5e-5 SSIM on the
full camera photo: see `test_the_libraries_in_float32_stay_near_the_convention`). pyiqa is given float32,
as its own image loader makes: its Y channel is computed in float32 and rounded, and float32 decides the
ties.
Each library's tests skip where it is not installed (`make test` installs all three).
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import DEGRADATIONS, PSNR_TOL, SSIM_TOL, degrade, real_image, save_image
from PIL import Image
from typer.testing import CliRunner

from pipeline.choices import Convention
from pipeline.cli import app
from pipeline.conventions import SPECS, prepare_pixels, resolve_convention
from pipeline.measure import Cache, measure
from pipeline.results import load_results

TOOLS = ("piq", "torchmetrics", "pyiqa")
METRICS = ("psnr", "ssim", "ms_ssim")
TOLERANCE = {"psnr": PSNR_TOL, "ssim": SSIM_TOL, "ms_ssim": SSIM_TOL}
MATPLOTLIB_DATA = Path(matplotlib.get_data_path()) / "sample_data"
# (photo, top, left): 181 x 203 crops (odd sides: the MS-SSIM pyramids' odd-side rules apply; >= 176 px:
# every library's five-scale MS-SSIM accepts them; < 384 px: piq does not downsample them)
CROPS = {
    "astronaut.png": (30, 150),
    "coffee.png": (60, 200),
    "grace_hopper.jpg": (40, 150),  # matplotlib's sample photo
    "camera.png": (50, 180),  # gray
    "moon.png": (200, 120),  # gray
}
Values = dict[str, float]


def photo(name: str) -> np.ndarray:
    """A uint8 photo of matplotlib's sample data, else of scikit-image's: (H, W) or (H, W, 3)."""
    path = MATPLOTLIB_DATA / name
    if not path.exists():
        return real_image(name)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def as_batch(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> (1, C, H, W) holding the stored integers."""
    tensor = torch.from_numpy(np.array(image))
    return tensor[None, None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)[None]


def ours(
    tool: str, ref: np.ndarray, out: np.ndarray, metrics: tuple[str, ...] = METRICS, peak: float = 255.0
):
    """`measure` of one pair of stored integers under the tool's convention: ({metric: value or None},
    warnings)."""
    values, notes = measure(as_batch(ref), as_batch(out), peak, metrics, resolve_convention(tool), Cache())
    return {metric: value[0] for metric, value in values.items()}, notes


def piq_values(x: torch.Tensor, y: torch.Tensor, metrics: tuple[str, ...]) -> Values:
    """piq with its defaults on (1, C, H, W) pairs in [0, 1] (its default data_range is 1.0)."""
    piq = pytest.importorskip("piq")
    calls = {"psnr": piq.psnr, "ssim": piq.ssim, "ms_ssim": piq.multi_scale_ssim}
    return {metric: float(calls[metric](x, y)) for metric in metrics}


def torchmetrics_values(x: torch.Tensor, y: torch.Tensor, metrics: tuple[str, ...]) -> Values:
    """torchmetrics' functional PSNR, SSIM and MS-SSIM with data_range=1.0 (PSNR requires it)."""
    image = pytest.importorskip("torchmetrics.functional.image")
    calls = {
        "psnr": image.peak_signal_noise_ratio,
        "ssim": image.structural_similarity_index_measure,
        "ms_ssim": image.multiscale_structural_similarity_index_measure,
    }
    return {metric: float(calls[metric](x, y, data_range=1.0)) for metric in metrics}


@functools.cache
def pyiqa_metric(name: str) -> Callable:
    """pyiqa's `create_metric(name)` with its default options, on the CPU."""
    pyiqa = pytest.importorskip("pyiqa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyiqa.create_metric(name, device="cpu")


def pyiqa_values(x: torch.Tensor, y: torch.Tensor, metrics: tuple[str, ...]) -> Values:
    """pyiqa's 'psnr', 'ssim' and 'ms_ssim' on [0, 1] pairs, called as metric(distorted, reference)."""
    return {metric: float(pyiqa_metric(metric)(y, x)) for metric in metrics}


LIBRARIES = {"piq": piq_values, "torchmetrics": torchmetrics_values, "pyiqa": pyiqa_values}


def library(
    tool: str, ref: np.ndarray, out: np.ndarray, metrics: tuple[str, ...] = METRICS, peak: float = 255.0
) -> Values:
    """The library's own values for one pair, its inputs the stored values / `peak`: float64, float32 for
    pyiqa (as its image loader makes them)."""
    dtype = torch.float32 if tool == "pyiqa" else torch.float64
    x, y = as_batch(ref).to(dtype) / peak, as_batch(out).to(dtype) / peak
    return LIBRARIES[tool](x, y, metrics)


def assert_agree(got: dict[str, float | None], expected: Values) -> None:
    for metric, value in expected.items():
        assert got[metric] == pytest.approx(value, abs=TOLERANCE[metric], rel=0), metric


@pytest.fixture(
    scope="module",
    params=[(name, kind) for name in CROPS for kind in DEGRADATIONS],
    ids=lambda value: f"{value[0]}-{value[1]}",
)
def crop_pair(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    """(181 x 203 crop of a photo, its degraded copy), uint8."""
    name, kind = request.param
    top, left = CROPS[name]
    reference = np.ascontiguousarray(photo(name)[top : top + 181, left : left + 203])
    return reference, degrade(reference, kind)


@pytest.mark.parametrize("tool", TOOLS)
def test_each_pair_scores_as_the_library_scores_it(tool, crop_pair):
    reference, output = crop_pair
    expected = library(tool, reference, output)
    got, notes = ours(tool, reference, output)
    assert notes == []
    assert_agree(got, expected)


@pytest.mark.parametrize(("name", "rows", "columns"), [("astronaut.png", 512, 512), ("camera.png", 385, 447)])
def test_piq_downsamples_photos_of_384_px_and_more_as_piq_does(name, rows, columns):
    """piq's SSIM average-pools by f = round(min(H, W) / 256) = 2 here (an odd side's last row dropped)."""
    reference = np.ascontiguousarray(photo(name)[:rows, :columns])
    output = degrade(reference, "jpeg")
    assert_agree(ours("piq", reference, output)[0], library("piq", reference, output))


@pytest.mark.parametrize("tool", TOOLS)
def test_a_photo_against_its_negative_is_clamped_as_the_library_clamps_it(tool):
    """Negative contrast-structure terms: piq and torchmetrics clamp each scale's mean, pyiqa every pixel."""
    for name in ("coffee.png", "camera.png"):
        top, left = CROPS[name]
        reference = photo(name)[top : top + 181, left : left + 203]
        expected = library(tool, reference, 255 - reference)
        assert_agree(ours(tool, reference, 255 - reference)[0], expected)


@pytest.mark.parametrize("tool", TOOLS)
def test_psnr_of_identical_and_nearly_identical_photos_keeps_the_librarys_epsilon(tool):
    """piq and pyiqa add 1e-8 to the MSE of [0, 1] values (80 dB for identical images); torchmetrics does
    not (inf)."""
    reference = photo("astronaut.png")[:64, :80]
    nearly = reference.copy()
    nearly[10, 20:23] += 1
    for output in (reference, nearly):
        expected = library(tool, reference, output, ("psnr",))["psnr"]
        got = ours(tool, reference, output, ("psnr",))[0]["psnr"]
        assert got == pytest.approx(expected, abs=PSNR_TOL, rel=0)
    assert ours(tool, reference, reference, ("psnr",))[0]["psnr"] == (
        float("inf") if tool == "torchmetrics" else pytest.approx(80.0)
    )


@pytest.mark.parametrize("tool", TOOLS)
def test_sixteen_bit_pairs_score_as_the_library_scores_them_scaled_to_one(tool):
    """16-bit photos / 65535: piq and torchmetrics do not depend on the bit depth; pyiqa's SSIM rounds its
    input to 8-bit levels (255 x its [0, 1] values), its PSNR does not."""
    top, left = CROPS["coffee.png"]
    eight = photo("coffee.png")[top : top + 181, left : left + 203]
    detail = np.random.default_rng(0).integers(0, 257, eight.shape)
    reference = (eight.astype(np.int64) * 257 // 2 + detail).astype(np.uint16)
    output = np.clip(reference + np.random.default_rng(1).normal(0, 900, eight.shape), 0, 65535)
    output = output.round().astype(np.uint16)
    expected = library(tool, reference, output, peak=65535.0)
    assert_agree(ours(tool, reference, output, peak=65535.0)[0], expected)


def test_pyiqa_sees_y_of_yiq_rounded_as_pyiqa_rounds_it():
    """Y = 0.299 R + 0.587 G + 0.114 B in float32, times 255, rounded half to even: the same levels as
    pyiqa's `to_y_channel`, ties included; gray as stored."""
    color_util = pytest.importorskip("pyiqa.utils.color_util")
    convention = resolve_convention("pyiqa")
    for name in ("astronaut.png", "coffee.png", "grace_hopper.jpg"):
        stored = as_batch(photo(name))
        levels = prepare_pixels(stored, convention, data_range=255.0)
        expected = color_util.to_y_channel(stored.float() / 255, 255, "yiq")
        torch.testing.assert_close(levels, expected.double(), rtol=0, atol=0)
        rgb = prepare_pixels(stored, convention, data_range=255.0, for_psnr=True)
        torch.testing.assert_close(rgb, stored.double(), rtol=0, atol=0)
    gray = as_batch(photo("camera.png"))
    torch.testing.assert_close(prepare_pixels(gray, convention, data_range=255.0), gray.double())


# Small images: each convention leaves a value null (with the reason) exactly where its library refuses.
SMALLEST = {  # tool: (smallest side SSIM accepts, smallest side five-scale MS-SSIM accepts)
    "piq": (11, 161),
    "torchmetrics": (6, 176),
    "pyiqa": (11, 161),
}


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("metric", ["ssim", "ms_ssim"])
def test_sides_below_the_librarys_minimum_leave_the_value_null_and_say_why(tool, metric):
    side = SMALLEST[tool][metric == "ms_ssim"]
    image = photo("coffee.png")
    reference = image[:side, : side + 7]
    output = degrade(reference, "noise")
    assert_agree(ours(tool, reference, output, (metric,))[0], library(tool, reference, output, (metric,)))
    small, small_output = reference[:-1], output[:-1]
    with pytest.raises((ValueError, RuntimeError, AssertionError)):
        library(tool, small, small_output, (metric,))
    values, notes = ours(tool, small, small_output, (metric,))
    assert values == {metric: None}
    assert len(notes) == 1 and f"{side} px" in notes[0] and "left null" in notes[0]


def test_the_libraries_in_float32_stay_near_the_convention():
    """What users usually run: float32 inputs. piq's and torchmetrics' own float32 rounding moves their SSIM
    and MS-SSIM by a few 1e-5 on this photo's flat sky; the convention is the float64 definition."""
    reference = photo("camera.png")
    output = degrade(reference, "jpeg")
    x, y = as_batch(reference).float() / 255, as_batch(output).float() / 255
    for tool in ("piq", "torchmetrics"):
        got = ours(tool, reference, output)[0]
        for metric, value in LIBRARIES[tool](x, y, METRICS).items():
            assert got[metric] == pytest.approx(value, abs=1e-4, rel=0), (tool, metric)


@pytest.mark.parametrize("tool", TOOLS)
def test_the_command_line_scores_under_a_library_convention_and_records_its_spec(tool, tmp_path):
    """`iqa score --convention NAME` (and `convention: NAME` in a config file) on a tiny folder: the values
    are the library's, MS-SSIM is null with the reason on 128 px images, and the manifest holds the spec."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    pairs = {name: photo(name)[:128, :140] for name in ("astronaut.png", "camera.png")}
    for name, image in pairs.items():
        save_image(ref / name, image)
        save_image(out / name, degrade(image, "jpeg"))
    config = tmp_path / "config.yaml"
    config.write_text(f"convention: {tool}\nmetrics: [psnr, ssim, ms_ssim]\nscheduler: sync\n")
    options = ["--config", str(config), "--no-report", "--no-progress"]
    if tool != "pyiqa":
        options += ["--convention", tool]
    result = CliRunner().invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *options])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"convention {tool}: ")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["convention"]["name"] == tool
    assert manifest["convention"]["spec"] == json.loads(json.dumps(SPECS[Convention(tool)].to_dict()))
    rows = load_results(tmp_path / "run").set_index("key")
    for name, image in pairs.items():
        row = rows.loc[Path(name).stem]
        expected = library(tool, image, degrade(image, "jpeg"), ("psnr", "ssim"))
        assert_agree({"psnr": row["psnr"], "ssim": row["ssim"]}, expected)
        assert np.isnan(row["ms_ssim"]) and any("ms_ssim left null" in note for note in row["warnings"])
