"""pipeline/explanation.py, `iqa explain` and `iqa conventions`: on a folder of real photos scored by each
tool itself (scikit-image, pytorch-msssim, BasicSR's formulas), the convention that reproduces the tool's
rounded dataset means must rank first; every pair is decoded once for all conventions."""

from __future__ import annotations

import importlib
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import degrade, image_batch, matlab_y, real_image, save_image, skimage_ssim
from pytorch_msssim import ms_ssim as msssim_reference
from pytorch_msssim import ssim as ssim_reference
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from test_named_conventions import matlab_gray_levels, matlab_psnr, msssim, ssim_index_new
from test_tool_conventions import as_batch, piq_values, pyiqa_values, torchmetrics_values
from typer.testing import CliRunner

import pipeline
import pipeline.explanation
import pipeline.worker
from pipeline.choices import Convention
from pipeline.cli import app
from pipeline.console import format_conventions
from pipeline.conventions import SPECS, ConventionSpec, resolve_convention
from pipeline.errors import ConfigError, UsageError
from pipeline.explanation import (
    EXPLAINED_METRICS,
    Variant,
    VariantMeans,
    convention_variants,
    parse_given,
    rank_variants,
)
from pipeline.measure import Cache, measure
from pipeline.metrics.structural import StructuralSpec, Window

runner = CliRunner()
SYNC = {"scheduler": "sync", "progress": False}
# Real photos, RGB and gray, each with another degradation; two sides >= 384 px, so that MATLAB's ssim.m
# downsamples them (matlab-downsampled differs from matlab), one odd width.
PHOTOS = {
    "astronaut.png": ((slice(0, 400), slice(0, 400)), "jpeg"),
    "camera.png": ((slice(50, 450), slice(0, 400)), "blur"),
    "coffee.png": ((slice(None), slice(None)), "bicubic4"),
    "chelsea.png": ((slice(None), slice(None)), "noise"),
}


@pytest.fixture(scope="module")
def photo_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (reference, output)}: real photos and their degraded copies, as uint8 arrays."""
    pairs = {}
    for name, (window, kind) in PHOTOS.items():
        reference = np.ascontiguousarray(real_image(name)[window])
        pairs[name] = (reference, degrade(reference, kind))
    return pairs


@pytest.fixture(scope="module")
def folders(photo_pairs, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("explain")
    for name, (reference, output) in photo_pairs.items():
        save_image(root / "ref" / name, reference)
        save_image(root / "out" / name, output)
    return root / "ref", root / "out"


@pytest.fixture(scope="module")
def explained(folders):
    """`pipeline.explain` of the folder with scale 4 and no given numbers (ranked again by each test)."""
    return pipeline.explain(*folders, scale=4, **SYNC)


@pytest.fixture
def small_folders(tmp_path) -> tuple[Path, Path]:
    """Two 200 px pairs of real photos (RGB and gray): for the runs of the CLI."""
    for name, kind in (("astronaut.png", "jpeg"), ("camera.png", "noise")):
        reference = real_image(name)[100:300, 100:300]
        save_image(tmp_path / "ref" / name, reference)
        save_image(tmp_path / "out" / name, degrade(reference, kind))
    return tmp_path / "ref", tmp_path / "out"


def reported(values: dict[str, list[float]], decimals: int = 4) -> dict[str, str]:
    """The dataset means as a paper prints them: rounded, as text."""
    return {metric: f"{np.mean(per_pair):.{decimals}f}" for metric, per_pair in values.items()}


def assert_ranked_first(explanation, given: dict[str, str], expected: Variant) -> None:
    ranking = rank_variants(explanation.ranking, parse_given(given))
    assert ranking[0].variant == expected, [(m.variant, m.distance) for m in ranking[:3]]
    assert ranking[0].reproduces
    assert ranking[0].distance < ranking[1].distance or ranking[1].reproduces


# Each tool's own numbers, and the convention named after it


def scikit_image_values(photo_pairs) -> dict[str, list[float]]:
    """Per-pair PSNR and SSIM as scikit-image computes them with its defaults (data range 255)."""
    values = {"psnr": [], "ssim": []}
    for reference, output in photo_pairs.values():
        channel_axis = -1 if reference.ndim == 3 else None
        values["psnr"].append(peak_signal_noise_ratio(reference, output, data_range=255))
        values["ssim"].append(
            structural_similarity(reference, output, data_range=255, channel_axis=channel_axis)
        )
    return values


def test_scikit_image_defaults_are_explained_by_skimage_defaults(explained, photo_pairs):
    values = scikit_image_values(photo_pairs)
    assert_ranked_first(explained, reported(values), Variant("skimage-defaults", 0))


def test_pytorch_msssim_is_explained_by_default(explained, photo_pairs):
    values = {"psnr": [], "ssim": [], "ms_ssim": []}
    for reference, output in photo_pairs.values():
        x, y = image_batch(reference, torch.float32), image_batch(output, torch.float32)
        values["psnr"].append(peak_signal_noise_ratio(reference, output, data_range=255))
        values["ssim"].append(float(ssim_reference(x, y, data_range=255, size_average=False)[0]))
        values["ms_ssim"].append(float(msssim_reference(x, y, data_range=255, size_average=False)[0]))
    assert_ranked_first(explained, reported(values), Variant("default", 0))


def test_basicsr_y_with_the_scale_cropped_is_explained_by_sr_paper(explained, photo_pairs):
    """BasicSR's calculate_psnr / calculate_ssim (test_y_channel=True, crop_border=4): MATLAB's Y, 4 px off
    each border, PSNR of the float64 Y, SSIM with an 11x11 Gaussian and valid filtering."""
    values = {"psnr": [], "ssim": [], "ms_ssim": []}
    for reference, output in photo_pairs.values():
        ref_y, out_y = (matlab_y(im) if im.ndim == 3 else im.astype(np.float64) for im in (reference, output))
        ref_y, out_y = ref_y[4:-4, 4:-4], out_y[4:-4, 4:-4]
        values["psnr"].append(10 * np.log10(255.0**2 / np.mean((ref_y - out_y) ** 2)))
        values["ssim"].append(skimage_ssim(ref_y, out_y, data_range=255.0))
        x, y = (torch.from_numpy(image.copy())[None, None] for image in (ref_y, out_y))
        values["ms_ssim"].append(float(msssim_reference(x, y, data_range=255.0, size_average=False)[0]))
    assert_ranked_first(explained, reported(values), Variant("sr-paper", 4))


LIBRARY_VALUES = {"piq": piq_values, "torchmetrics": torchmetrics_values, "pyiqa": pyiqa_values}


@pytest.mark.parametrize("tool", LIBRARY_VALUES)
def test_each_librarys_defaults_are_explained_by_its_convention(explained, photo_pairs, tool):
    """piq, torchmetrics and pyiqa, called with their defaults on the stored values / 255 (float64; float32
    for pyiqa, as its image loader makes): the convention of the same name, uncropped, ranks first. Every
    photo here (>= 300 px) is above each library's MS-SSIM minimum side, so all three metrics are given."""
    pytest.importorskip({"torchmetrics": "torchmetrics.functional.image"}.get(tool, tool))
    dtype = torch.float32 if tool == "pyiqa" else torch.float64
    values = {metric: [] for metric in EXPLAINED_METRICS}
    for reference, output in photo_pairs.values():
        x, y = as_batch(reference).to(dtype) / 255, as_batch(output).to(dtype) / 255
        for metric, value in LIBRARY_VALUES[tool](x, y, EXPLAINED_METRICS).items():
            values[metric].append(value)
    assert_ranked_first(explained, reported(values), Variant(tool, 0))


def test_matlab_ssim_index_and_msssim_on_rgb2gray_are_explained_by_matlab(explained, photo_pairs):
    """Zhou Wang's ssim_index.m and msssim.m (no automatic downsampling) on MATLAB's rgb2gray levels, as
    transcribed in tests/test_named_conventions.py: matlab ranks first, ahead of matlab-downsampled."""
    values = {"psnr": [], "ssim": [], "ms_ssim": []}
    for reference, output in photo_pairs.values():
        img1, img2 = matlab_gray_levels(reference), matlab_gray_levels(output)
        values["psnr"].append(matlab_psnr(img1, img2))
        values["ssim"].append(ssim_index_new(img1, img2)[0])
        values["ms_ssim"].append(msssim(img1, img2))
    assert_ranked_first(explained, reported(values), Variant("matlab", 0))


@pytest.mark.parametrize("variant", convention_variants(4), ids=Variant.describe)
def test_every_convention_is_found_from_its_own_rounded_means(explained, photo_pairs, variant):
    """Whatever SPECS holds: the means of `measure` under a convention, on pairs decoded here by Pillow,
    rounded to 4 decimals, are reproduced by that convention and by nothing closer."""
    convention = resolve_convention(variant.convention, crop=variant.crop)
    values = {metric: [] for metric in EXPLAINED_METRICS}
    for reference, output in photo_pairs.values():
        ref, out = image_batch(reference, torch.uint8), image_batch(output, torch.uint8)
        measured, _ = measure(ref, out, 255.0, EXPLAINED_METRICS, convention, Cache())
        for metric in EXPLAINED_METRICS:
            values[metric].append(measured[metric][0])
    values = {metric: found for metric, found in values.items() if None not in found}  # e.g. no MS-SSIM
    ranking = rank_variants(explained.ranking, parse_given(reported(values)))
    found = next(entry for entry in ranking if entry.variant == variant)
    assert found.reproduces and found.distance == ranking[0].distance


def test_explain_finds_the_match_end_to_end(folders, photo_pairs):
    """The CLI with given numbers: scikit-image's rounded means name skimage-defaults."""
    values = scikit_image_values(photo_pairs)
    given = reported(values)
    args = ["explain", *map(str, folders), "--psnr", given["psnr"], "--ssim", given["ssim"]]
    result = runner.invoke(app, [*args, "--scheduler", "sync", "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith(f"given: psnr {given['psnr']}, ssim {given['ssim']} (reproduced when every ")
    assert lines[4].split()[:2] == ["skimage-defaults", "0"] and lines[4].endswith("yes")
    assert lines[-1].startswith("reproduced by skimage-defaults crop 0")


# Ranking and rounding


def test_no_convention_reproduces_absurd_numbers(explained, small_folders):
    ranking = rank_variants(explained.ranking, parse_given({"psnr": "99.9", "ssim": "0.1234"}))
    assert not any(entry.reproduces for entry in ranking)
    assert [entry.distance for entry in ranking] == sorted(entry.distance for entry in ranking)
    args = ["explain", *map(str, small_folders), "--ssim", "0.1234", "--scheduler", "sync"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("no convention reproduces ssim 0.1234; the closest is ")


def test_the_digits_given_decide_what_reproduces():
    means = [VariantMeans(Variant("a", 0), {"psnr": 31.2749, "ssim": 0.91235}, pairs=2)]
    assert rank_variants(means, parse_given({"psnr": "31.27"}))[0].reproduces
    assert not rank_variants(means, parse_given({"psnr": "31.270"}))[0].reproduces  # 31.2749 != 31.270
    assert not rank_variants(means, parse_given({"psnr": "31.28"}))[0].reproduces  # 1.02 half units off
    assert rank_variants(means, parse_given({"psnr": "31"}))[0].distance == pytest.approx(0.2749 / 0.5)
    assert not rank_variants(means, parse_given({"psnr": "31.27", "ssim": "0.9125"}))[0].reproduces
    assert rank_variants(means, parse_given({"ssim": 0.9124}))[0].reproduces  # 0.91235: half way
    assert rank_variants(means, parse_given({"ms_ssim": "0.9"}))[0].distance == float("inf")  # no mean


def test_given_values_that_are_not_numbers_are_usage_errors():
    assert parse_given({"ssim": "9.123e-1"})["ssim"].half_unit == pytest.approx(5e-5)
    for text in ("0.9x", "nan", "inf", ""):
        with pytest.raises(UsageError, match="--ssim"):
            parse_given({"ssim": text})
    with pytest.raises(UsageError, match="--lpips"):
        parse_given({"lpips": "0.1"})


def test_without_given_numbers_the_table_is_sorted_by_name_and_says_nothing_of_matches(explained):
    names = [(entry.variant.convention, entry.variant.crop) for entry in explained.ranking]
    assert names == sorted(names)
    assert {v.convention for v in convention_variants()} == {c.value for c in SPECS}
    assert all(entry.distance is None and not entry.reproduces for entry in explained.ranking)
    assert explained.match is None and explained.to_dict()["match"] is None


def test_means_leave_out_infinite_psnr_and_null_values(explained):
    """Means are over the finite per-pair values, as the run summary computes them."""
    frame = explained.values
    for entry in explained.ranking:
        rows = frame[(frame.convention == entry.variant.convention) & (frame.crop == entry.variant.crop)]
        assert entry.pairs == len(rows) == len(PHOTOS)
        for metric in EXPLAINED_METRICS:
            measured = rows[metric].dropna()
            expected = None if measured.empty else pytest.approx(measured.mean(), rel=1e-12)
            assert entry.means[metric] == expected


def test_identical_pairs_leave_psnr_inf_out_of_the_means(tmp_path):
    image = real_image("astronaut.png")[:200, :200]
    save_image(tmp_path / "ref/a.png", image)
    save_image(tmp_path / "out/a.png", image)
    save_image(tmp_path / "ref/b.png", image)
    save_image(tmp_path / "out/b.png", degrade(image, "noise"))
    explanation = pipeline.explain(tmp_path / "ref", tmp_path / "out", **SYNC)
    default = next(entry for entry in explanation.ranking if entry.variant == Variant("default", 0))
    b = explanation.values.query("key == 'b' and convention == 'default'")
    assert default.means["psnr"] == pytest.approx(float(b.psnr.iloc[0]))
    assert default.means["ssim"] == pytest.approx((1 + float(b.ssim.iloc[0])) / 2)


# JSON, Dask, decoding once


def test_json_holds_the_ranking_best_first_and_the_match(small_folders, tmp_path):
    first = pipeline.explain(*small_folders, **SYNC)
    default = next(entry for entry in first.ranking if entry.variant == Variant("default", 0))
    ssim_text = f"{default.means['ssim']:.4f}"
    path = tmp_path / "explain.json"
    args = ["explain", *map(str, small_folders), "--ssim", ssim_text, "--json", str(path)]
    result = runner.invoke(app, [*args, "--scheduler", "sync"])
    assert result.exit_code == 0, result.output
    content = json.loads(path.read_text())
    assert set(content) == {"given", "ranking", "match"} and content["given"] == {"ssim": ssim_text}
    ranking = content["ranking"]
    assert len(ranking) == len(SPECS)
    assert {"convention", "crop", "psnr", "ssim", "ms_ssim", "distance"} <= set(ranking[0])
    assert [entry["distance"] for entry in ranking] == sorted(entry["distance"] for entry in ranking)
    assert content["match"] == ranking[0] and ranking[0]["reproduces"]
    found = next(entry for entry in ranking if (entry["convention"], entry["crop"]) == ("default", 0))
    assert found["reproduces"] and found["ssim"] == pytest.approx(default.means["ssim"], abs=1e-12)


def test_each_pair_is_read_and_decoded_once_for_every_convention(small_folders, monkeypatch):
    calls = {"read": 0, "decode": 0, "measure": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(pipeline.worker, "read_image_file", counting("read", pipeline.worker.read_image_file))
    monkeypatch.setattr(pipeline.worker, "decode_image", counting("decode", pipeline.worker.decode_image))
    monkeypatch.setattr(pipeline.explanation, "measure", counting("measure", pipeline.explanation.measure))
    explanation = pipeline.explain(*small_folders, scale=2, **SYNC)
    variants = len(convention_variants(2))
    assert calls == {"read": 2 * 2, "decode": 2 * 2, "measure": 2 * variants}
    assert len(explanation.values) == 2 * variants


def assert_same_means(first, second) -> None:
    """The same variants in the same order, with means equal to float32 summation order (the default
    convention's threads)."""
    assert [e.variant for e in first.ranking] == [e.variant for e in second.ranking]
    for one, other in zip(first.ranking, second.ranking, strict=True):
        assert one.pairs == other.pairs
        for metric in EXPLAINED_METRICS:
            expected = other.means[metric]
            assert one.means[metric] == (
                None if expected is None else pytest.approx(expected, rel=1e-6, abs=0)
            )


def test_the_dask_cluster_gives_what_the_sync_run_gives(small_folders):
    synced = pipeline.explain(*small_folders, scale=2, **SYNC)
    clustered = pipeline.explain(*small_folders, scale=2, progress=False)  # the embedded cluster
    assert_same_means(clustered, synced)


@pytest.mark.slow
def test_a_worker_process_gives_what_the_sync_run_gives(small_folders):
    synced = pipeline.explain(*small_folders, **SYNC)
    clustered = pipeline.explain(*small_folders, workers=1, progress=False)
    assert_same_means(clustered, synced)


# Exit codes


def test_a_failed_pair_is_left_out_and_exits_1(small_folders):
    ref, out = small_folders
    (out / "camera.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["explain", str(ref), str(out), "--scheduler", "sync", "--no-progress"])
    assert result.exit_code == 1
    assert "failed: camera: " in result.stdout
    assert "The means leave references out (1 failed, 0 missing output(s)" in result.stderr
    assert all(line.split()[2] == "1" for line in result.stdout.splitlines()[3 : 3 + len(SPECS)])


def test_a_missing_output_exits_1(small_folders):
    ref, out = small_folders
    (out / "camera.png").unlink()
    result = runner.invoke(app, ["explain", str(ref), str(out), "--scheduler", "sync", "--no-progress"])
    assert result.exit_code == 1 and "1 missing output(s)" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ssim", "0.9x"], "--ssim '0.9x' is not a finite number"),
        (["--scale", "0"], "Invalid value for '--scale'"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers and --threads size the embedded"),
        (["--output-suffix", "_x", "--output-template", "{stem}_x"], "use only one of output_suffix"),
        (["--convention", "matlab"], "No such option: --convention"),
    ],
)
def test_usage_errors_exit_2_with_one_line(small_folders, extra, message):
    scheduler = [] if "--scheduler" in extra else ["--scheduler", "sync"]
    result = runner.invoke(app, ["explain", *map(str, small_folders), *extra, *scheduler])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_no_pairs_and_missing_folders_exit_2(small_folders, tmp_path):
    ref, _ = small_folders
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["explain", str(ref), str(tmp_path / "empty"), "--scheduler", "sync"])
    assert result.exit_code == 2 and "No pairs to explain" in result.output
    result = runner.invoke(app, ["explain", str(ref), str(tmp_path / "nowhere"), "--scheduler", "sync"])
    assert result.exit_code == 2 and result.output.startswith("error: ")


def test_the_api_refuses_options_that_explain_does_not_take(small_folders):
    with pytest.raises(ConfigError, match="explain does not take convention, metrics"):
        pipeline.explain(*small_folders, convention="matlab", metrics="psnr", **SYNC)


# iqa conventions


def test_conventions_prints_one_line_per_spec_and_the_lpips_note():
    result = runner.invoke(app, ["conventions"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["convention", "what"]
    rows = lines[2 : 2 + len(SPECS)]
    assert [row.split()[0] for row in rows] == [name.value for name in SPECS]
    for row, spec in zip(rows, SPECS.values(), strict=True):
        assert row.endswith(spec.users) and spec.structural.window.describe() in row
    assert lines[2 + len(SPECS)].startswith("LPIPS is the lpips package (v0.1) in every convention")


def test_the_table_is_derived_from_the_specs():
    """A convention added later shows what its spec says, with no name known to the formatter."""
    spec = ConventionSpec(
        "stored", torch.float16, "a tool added later",
        structural=StructuralSpec(window=Window("uniform", 8), padding="reflect", downsample="average_pool"),
    )  # fmt: skip
    row = format_conventions({Convention.DEFAULT: spec}).splitlines()[2]
    cells = [cell for cell in row.split("  ") if cell.strip()]
    assert [cell.strip() for cell in cells] == [
        "default", "channels as stored, float16", "8x8 uniform, average_pool downsampling first", "reflect",
        "population", "none (or --crop-border)", "a tool added later",
    ]  # fmt: skip


@pytest.mark.parametrize("name", [*(convention.value for convention in SPECS), "basicsr"])
def test_conventions_name_prints_every_field_of_the_spec(name):
    result = runner.invoke(app, ["conventions", name])
    assert result.exit_code == 0, result.output
    spec = SPECS[Convention(name)]
    printed = dict(line.strip().split(": ", 1) for line in result.stdout.splitlines()[1:])
    assert printed["precision"] == str(spec.precision).removeprefix("torch.")
    for item in fields(spec):
        value = getattr(spec, item.name)
        if item.name == "structural":
            for nested in fields(value):
                assert f"structural.{nested.name}" in printed or f"structural.{nested.name}.kind" in printed
        elif item.name != "precision":
            assert printed[item.name] == ("none" if value is None else str(value))
    assert printed["structural.window.size"] == str(spec.structural.window.size)
    assert "lpips package" in printed["lpips"]


def test_an_unknown_convention_exits_2_listing_the_names():
    result = runner.invoke(app, ["conventions", "photoshop"])
    assert result.exit_code == 2
    names = ", ".join(convention.value for convention in SPECS)
    assert result.output.strip() == f"error: Unknown convention 'photoshop'. Conventions: {names}."


# scripts/convention_spread.py


def test_the_spread_script_differences_each_convention_from_default(explained, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    spread = importlib.import_module("convention_spread")
    differences = spread.per_pair_differences(explained.values)
    frame = explained.values.query("crop == 0").set_index(["convention", "key"])
    others = [name.value for name in SPECS if name != Convention.DEFAULT]
    for metric in EXPLAINED_METRICS:
        assert sorted(differences[metric].columns) == sorted(others)
        for convention in others:
            expected = frame.loc[convention, metric] - frame.loc["default", metric]
            got = differences[metric][convention].to_dict()
            assert got == pytest.approx(expected.astype(float).to_dict(), abs=1e-12, nan_ok=True)
    rows = spread.spread_table(differences).splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| `{name}`" for name in sorted(others)]
    table = spread.conventions_table().splitlines()
    assert [row.split(" | ")[0] for row in table[2 : 2 + len(SPECS)]] == [f"| `{c.value}`" for c in SPECS]
