"""FID and KID of a run: the reductions against torchmetrics on the same features, and whole runs (Dask and
sync) against torchmetrics' `FrechetInceptionDistance` / `KernelInceptionDistance` on the same photos with
the same seeded Inception weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import degrade, install, make_dataset, one_line_error, real_image, save_image, sha256_of
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
from torchmetrics.image.kid import KernelInceptionDistance
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.config import validate_config
from pipeline.dataset_metrics import (
    DatasetAccumulator,
    FeatureSample,
    FeatureSums,
    ShardFeatures,
    frechet_distance,
    kernel_inception_distance,
)
from pipeline.errors import ConfigError
from pipeline.metrics.inception import INCEPTION_FILE

RELATIVE = 1e-3  # the agreement with torchmetrics
PAIRS = 12  # 4 per group g0, g1, g2: far fewer than the 2048 features, as in the warning's case
KID_SUBSETS, KID_SUBSET_SIZE = 20, 6
runner = CliRunner()


DIM = 64  # features of the reduction tests: the reductions do not depend on the dimension


class Features(torch.nn.Module):
    """torchmetrics' custom-extractor hook, handing it our features: FID/KID on exactly the same inputs."""

    num_features = DIM

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def random_features(count: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.gamma(2.0, 0.2, size=(count, DIM)) + shift).astype(np.float32)


def shard(keys: list[str], groups: list[str], seed: int) -> ShardFeatures:
    return ShardFeatures(
        keys, groups, random_features(len(keys), seed), random_features(len(keys), seed + 100, 0.05)
    )


def close(value: float, expected: float, tolerance: float = RELATIVE) -> bool:
    return abs(value - expected) <= tolerance * abs(expected)


# The reductions, on the same features


def test_sums_folded_in_pieces_give_torchs_mean_and_covariance():
    features = random_features(30, 0)
    sums = FeatureSums()
    for piece in np.array_split(features, 4):
        sums.add(piece)
    mean, covariance = sums.mean_and_covariance()
    values = torch.from_numpy(features).double()
    torch.testing.assert_close(mean, values.mean(dim=0))
    torch.testing.assert_close(covariance, torch.cov(values.T))


def test_frechet_distance_equals_torchmetrics_fid_on_the_same_features():
    reference, output = random_features(40, 1), random_features(40, 2, shift=0.05)
    metric = FrechetInceptionDistance(feature=Features())
    metric.update(torch.from_numpy(reference), real=True)
    metric.update(torch.from_numpy(output), real=False)
    ours_reference, ours_output = FeatureSums(), FeatureSums()
    ours_reference.add(reference)
    ours_output.add(output)
    assert close(frechet_distance(ours_reference, ours_output), float(metric.compute()), 1e-6)


def test_kid_equals_torchmetrics_kid_after_its_seed():
    reference, output = random_features(30, 3), random_features(30, 4, shift=0.05)
    metric = KernelInceptionDistance(feature=Features(), subsets=10, subset_size=12)
    metric.update(torch.from_numpy(reference), real=True)
    metric.update(torch.from_numpy(output), real=False)
    torch.manual_seed(0)
    expected_mean, expected_std = (float(v) for v in metric.compute())
    features = torch.from_numpy(reference), torch.from_numpy(output)
    mean, std = kernel_inception_distance(*features, subsets=10, subset_size=12, seed=0)
    assert close(mean, expected_mean, 1e-6) and close(std, expected_std, 1e-5)
    assert expected_std > 0.01 * abs(expected_mean)  # the subsets differ: the std is no rounding noise


def test_the_kid_sample_is_bounded_and_independent_of_shard_order():
    keys = [f"k{index:03d}" for index in range(40)]
    shards = [shard(keys[start : start + 8], ["g"] * 8, seed=start) for start in range(0, 40, 8)]
    forward, backward = FeatureSample(limit=6), FeatureSample(limit=6)
    for piece in shards:
        forward.add(piece)
        assert forward.count <= 2 * 6
    for piece in reversed(shards):
        backward.add(piece)
    kept_forward, kept_backward = forward.ordered(), backward.ordered()
    assert len(kept_forward) == 6 and kept_forward.keys == sorted(kept_forward.keys)
    assert kept_forward.keys == kept_backward.keys and kept_forward.keys != keys[:6]
    assert np.array_equal(kept_forward.reference, kept_backward.reference)
    assert np.array_equal(kept_forward.output, kept_backward.output)


def test_a_sample_larger_than_the_set_keeps_every_pair_in_key_order():
    sample = FeatureSample(limit=100)
    sample.add(shard(["b", "a", "c"], ["g"] * 3, seed=5))
    kept = sample.ordered()
    features = shard(["b", "a", "c"], ["g"] * 3, seed=5).reference
    assert kept.keys == ["a", "b", "c"] and np.array_equal(kept.reference, features[[1, 0, 2]])


def test_groups_beyond_the_limit_give_the_whole_set_only_with_a_warning():
    accumulator = DatasetAccumulator(("fid",), {"a", "b", "c"}, max_groups=2)
    accumulator.add(shard(["a/1", "b/1", "c/1", "a/2"], ["a", "b", "c", "a"], seed=7))
    fid, warnings = accumulator.fid()
    assert fid["all"] is not None and fid["groups"] == {}
    assert any("per-group FID left out: 3 groups" in warning for warning in warnings)


def test_a_group_of_one_image_has_no_fid_and_says_why():
    accumulator = DatasetAccumulator(("fid", "kid"), {"a", "b"})
    accumulator.add(shard(["a/1", "a/2", "a/3", "b/1"], ["a", "a", "a", "b"], seed=8))
    fid, warnings = accumulator.fid()
    assert fid["groups"]["b"] is None and fid["groups"]["a"] is not None
    assert "FID of group b left out: it needs at least 2 images per side, 1 found" in warnings
    assert sum("fewer than the 2048 Inception features" in warning for warning in warnings) == 1  # said once


def test_kid_of_one_pair_is_left_out_and_a_small_set_shrinks_the_subsets():
    one = DatasetAccumulator(("kid",), {"a"})
    one.add(shard(["a/1"], ["a"], seed=9))
    result, warnings = one.kid(10, 1000)
    assert result["mean"] is None and "at least 2 scored pairs, 1 found" in warnings[0]
    few = DatasetAccumulator(("kid",), {"a"})
    few.add(shard([f"a/{i}" for i in range(5)], ["a"] * 5, seed=10))
    result, warnings = few.kid(10, 1000)
    assert result["subset_size"] == 5 and result["mean"] is not None
    assert "KID subsets of 5 pairs instead of 1000" in warnings[0]


def test_dataset_metrics_are_validated_like_other_fields():
    assert validate_config({"dataset_metrics": "kid, fid,kid"}).dataset_metrics == ("kid", "fid")
    assert validate_config({}).dataset_metrics == ()
    with pytest.raises(ConfigError, match="unknown dataset metric 'is'; choose from fid, kid"):
        validate_config({"dataset_metrics": "fid,is"})


# Whole runs against torchmetrics on real photos


def read_batch(folder: Path, keys: list[str]) -> torch.Tensor:
    """(N, 3, H, W) uint8 of `folder/<key>.png`, gray replicated (as the pipeline gives Inception)."""
    images = []
    for key in keys:
        array = np.asarray(Image.open(folder / f"{key}.png"))
        images.append(np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def torchmetrics_values(ref: Path, out: Path, weights: Path) -> dict[str, float]:
    """torchmetrics' FID of the whole set and of each group, and its KID after `torch.manual_seed(0)` on the
    pairs in key order."""
    keys = sorted(str(path.relative_to(ref).with_suffix("")) for path in ref.rglob("*.png"))
    values = {}
    for name in ("all", "g0", "g1", "g2"):
        chosen = [key for key in keys if name == "all" or key.startswith(name + "/")]
        fid = FrechetInceptionDistance(feature_extractor_weights_path=str(weights))
        fid.update(read_batch(ref, chosen), real=True)
        fid.update(read_batch(out, chosen), real=False)
        values[name] = float(fid.compute())
    extractor = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(weights))
    kid = KernelInceptionDistance(feature=extractor, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE)
    kid.update(read_batch(ref, keys), real=True)
    kid.update(read_batch(out, keys), real=False)
    torch.manual_seed(0)
    values["kid_mean"], values["kid_std"] = (float(v) for v in kid.compute())
    return values


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """12 pairs of 200 px crops of real photos (one gray) in groups g0..g2, outputs noisy."""
    return make_dataset(tmp_path_factory.mktemp("fid"), PAIRS)


@pytest.fixture(scope="module")
def oracle(photos, inception_weights) -> dict[str, float]:
    return torchmetrics_values(*photos, inception_weights)


def score_with_dataset_metrics(photos, run_dir: Path, weights: Path, **options) -> pipeline.api.Run:
    return pipeline.score(
        *photos, run_dir, metrics="psnr", dataset_metrics="fid,kid", inception_weights=str(weights),
        kid_subsets=KID_SUBSETS, kid_subset_size=KID_SUBSET_SIZE, progress=False, report=False, **options,
    )  # fmt: skip


@pytest.fixture(
    scope="module",
    params=[{"workers": 1, "threads": 1}, {"scheduler": "sync"}],
    ids=["dask-worker-process", "sync"],
)
def scored(request, photos, inception_weights, tmp_path_factory) -> dict:
    """The manifest's `dataset_metrics` of a run on an embedded Dask cluster (a worker process, which gets
    the weights through the plugin) and of a `--scheduler sync` run."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    return score_with_dataset_metrics(photos, run_dir, inception_weights, **request.param).manifest


@pytest.mark.slow
def test_fid_and_kid_equal_torchmetrics(scored, oracle):
    block = scored["dataset_metrics"]
    assert close(block["fid"]["all"], oracle["all"]), (block["fid"], oracle)
    for group in ("g0", "g1", "g2"):
        assert close(block["fid"]["groups"][group], oracle[group]), (group, block["fid"], oracle)
    assert close(block["kid"]["mean"], oracle["kid_mean"]), (block["kid"], oracle)
    assert close(block["kid"]["std"], oracle["kid_std"]), (block["kid"], oracle)
    assert len({round(v, 6) for v in oracle.values()}) == len(oracle)  # the groups really differ


@pytest.mark.slow
def test_the_manifest_names_the_extractor_weights_counts_and_the_small_set_warning(scored, inception_weights):
    block = scored["dataset_metrics"]
    assert block["extractor"]["resize"] == "torchmetrics" and block["extractor"]["features"] == 2048
    assert "NoTrainInceptionV3" in block["extractor"]["name"]
    assert block["weights_sha256"] == sha256_of(inception_weights)
    assert block["images"] == {"reference": PAIRS, "output": PAIRS, "groups": {"g0": 4, "g1": 4, "g2": 4}}
    assert block["kid"]["subset_size"] == KID_SUBSET_SIZE and block["kid"]["sampled"] == PAIRS
    assert block["warnings"] == [
        "FID of the whole set from 12 images per side, fewer than the 2048 Inception features: the "
        "covariances are singular and the value is biased upwards, comparable only with FID from as many "
        "images (computed as torchmetrics computes it, which does not warn)"
    ]
    assert scored["counts"]["ok"] == PAIRS


def test_a_run_without_dataset_metrics_records_none(photo_folders, tmp_path):
    run = pipeline.score(*photo_folders, tmp_path / "run", metrics="psnr", progress=False, report=False)
    assert run.manifest["dataset_metrics"] is None


@pytest.mark.slow
def test_resume_recomputes_the_features_of_reused_pairs(tmp_path, inception_weights):
    ref, out = make_dataset(tmp_path / "data", 6)
    options = {"scheduler": "sync", "group_depth": 0}
    first = score_with_dataset_metrics((ref, out), tmp_path / "run", inception_weights, **options)
    changed = out / "g1" / "0004.png"
    save_image(changed, degrade(np.asarray(Image.open(changed)), "blur"))
    resumed = pipeline.score(
        ref, out, tmp_path / "run", resume=True, metrics="psnr", dataset_metrics="fid,kid",
        inception_weights=str(inception_weights), kid_subsets=KID_SUBSETS, kid_subset_size=KID_SUBSET_SIZE,
        progress=False, report=False, **options,
    )  # fmt: skip
    fresh = score_with_dataset_metrics((ref, out), tmp_path / "fresh", inception_weights, **options)
    assert resumed.manifest["resume"] == {"reused": 5, "scored": 1}
    got, expected = resumed.manifest["dataset_metrics"], fresh.manifest["dataset_metrics"]
    assert got["images"] == expected["images"] == {"reference": 6, "output": 6, "groups": {"": 6}}
    assert close(got["fid"]["all"], expected["fid"]["all"], 1e-6)
    assert close(got["kid"]["mean"], expected["kid"]["mean"], 1e-6)
    assert not close(got["fid"]["all"], first.manifest["dataset_metrics"]["fid"]["all"], 1e-3)


@pytest.mark.slow
def test_cli_prints_one_line_each_the_warning_and_a_report_section(tmp_path, inception_weights):
    ref, out = make_dataset(tmp_path / "data", 4)
    result = runner.invoke(app, [
        "score", str(ref), str(out), "-o", str(tmp_path / "run"), "--metrics", "psnr",
        "--dataset-metrics", "fid,kid", "--inception-weights", str(inception_weights), "--scheduler", "sync",
        "--group-depth", "0", "--kid-subsets", "5", "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    fid_lines = [line for line in result.stdout.splitlines() if line.startswith("FID ")]
    kid_lines = [line for line in result.stdout.splitlines() if line.startswith("KID ")]
    assert len(fid_lines) == len(kid_lines) == 1
    assert "4 images per side" in fid_lines[0] and sha256_of(inception_weights)[:8] in fid_lines[0]
    assert "(5 subsets of 4 pairs)" in kid_lines[0]
    assert "fewer than the 2048 Inception features" in result.stderr
    assert "KID subsets of 4 pairs instead of 1000" in result.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    fid = manifest["dataset_metrics"]["fid"]["all"]
    assert fid_lines[0].startswith(f"FID {fid:.4f} ")
    report = (tmp_path / "run" / "report.html").read_text()
    section = report.split('<section id="dataset">')[1].split("</section>")[0]
    assert f"{fid:.4g}" in section and "NoTrainInceptionV3" in section
    assert "fewer than the 2048 Inception features" in section


@pytest.mark.parametrize("where", ["missing", "wrong"])
def test_missing_or_wrong_weights_exit_2_before_scoring(tmp_path, torch_home, inception_weights, where):
    ref = tmp_path / "ref"
    save_image(ref / "a.png", real_image("astronaut.png")[:64, :64])
    save_image(tmp_path / "out" / "a.png", real_image("astronaut.png")[:64, :64])
    if where == "wrong":
        install(inception_weights, torch_home / INCEPTION_FILE)  # refused: its hash is not 6726825d...
    result = runner.invoke(app, [
        "score", str(ref), str(tmp_path / "out"), "-o", str(tmp_path / "run"), "--metrics", "psnr",
        "--dataset-metrics", "fid", "--scheduler", "sync",
    ])  # fmt: skip
    one_line_error(result, 2, INCEPTION_FILE if where == "missing" else "its name says 6726825d")
    assert not (tmp_path / "run").exists()
