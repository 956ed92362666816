"""pipeline/adapters: the full-reference metrics of pyiqa, piq and torchmetrics through `pipeline.score`, per
pair equal to the library called directly on the same real photos; their columns, directions and the
messages for a missing library, an unknown metric and missing weights."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import piq
import pyiqa
import pytest
import torch
import torchmetrics.functional.image as tm_functional
import torchmetrics.image as tm_modular
from conftest import degrade, one_line_error, real_image, save_image, sha256_of
from PIL import Image
from pyiqa.default_model_configs import DEFAULT_CONFIGS
from pyiqa.utils import download_util
from typer.testing import CliRunner

import pipeline
from pipeline import adapters
from pipeline.adapters import piq as piq_adapter
from pipeline.adapters import pyiqa as pyiqa_adapter
from pipeline.adapters import torchmetrics as tm_adapter
from pipeline.choices import METRICS, MetricSpec, adapted_name, adapted_plugin, metric_adapter, metric_column
from pipeline.cli import app
from pipeline.comparison import compare_frames
from pipeline.config import validate_config
from pipeline.errors import ConfigError, WeightsError
from pipeline.metric_plugins import Batch

runner = CliRunner()
PARITY = 1e-6
# Reference photo, degradation, crop side: RGB and gray, each pair its own size, so each is a batch of one
# (`test_a_batch_of_pairs_equals_the_library_on_the_same_batch`: several)
PAIRS = (
    ("astronaut.png", "jpeg", 192), ("coffee.png", "blur", 184), ("chelsea.png", "bicubic4", 200),
    ("camera.png", "noise", 176), ("motorcycle_left.png", "bicubic2", 168),
)  # fmt: skip
PYIQA_METRICS = ("fsim", "vif", "gmsd", "nlpd", "vsi", "cw_ssim")
PIQ_METRICS = ("gmsd", "fsim", "vif_p", "haarpsi")
TORCHMETRICS_METRICS = (
    "structural_similarity_index_measure", "universal_image_quality_index", "visual_information_fidelity",
    "relative_average_spectral_error",
)  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """ref/ and out/: crops of real photos and degraded copies, one pair per `PAIRS` entry."""
    root = tmp_path_factory.mktemp("photos")
    for index, (name, kind, side) in enumerate(PAIRS):
        image = real_image(name)[:side, :side]
        save_image(root / "ref" / f"{index}.png", image)
        save_image(root / "out" / f"{index}.png", degrade(image, kind, seed=index))
    return root / "ref", root / "out"


def rgb_unit(path: str) -> torch.Tensor:
    """An image file as pyiqa's reader gives it: RGB (1, 3, H, W) float32 in [0, 1], gray replicated."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255.0


def scored(photos, tmp_path_factory, metrics: list[str], **options) -> pd.DataFrame:
    """The rows of `pipeline.score` on the photos, one thread; every pair ok."""
    run_dir = tmp_path_factory.mktemp("run") / "run"
    run = pipeline.score(
        *photos, run_dir, metrics=metrics, progress=False, report=False, threads=1, **options
    )
    assert run.counts["error"] == 0, run.frame["error"].dropna().tolist()
    return run.frame


def largest_difference(frame: pd.DataFrame, column: str, direct) -> float:
    """max over the pairs of `frame` of |pipeline - library| / max(1, |library|) (absolute below 1, relative
    above; equal infinities are equal), the library called as `direct(ref_path, out_path)`."""
    differences = []
    for row in frame.itertuples():
        expected, value = float(direct(row.ref_path, row.out_path)), getattr(row, column)
        differences.append(0.0 if value == expected else abs(value - expected) / max(1.0, abs(expected)))
    return max(differences)


@pytest.fixture(scope="module")
def pyiqa_run(photos, tmp_path_factory) -> pd.DataFrame:
    return scored(photos, tmp_path_factory, [f"pyiqa:{name}" for name in PYIQA_METRICS], scheduler="sync")


@pytest.mark.parametrize("name", PYIQA_METRICS)
def test_pyiqa_metrics_equal_pyiqa_called_on_the_files(pyiqa_run, name):
    metric = pyiqa.create_metric(name, device="cpu")
    with torch.inference_mode():
        difference = largest_difference(pyiqa_run, f"pyiqa_{name}", lambda ref, out: metric(out, ref))
    assert difference <= PARITY, difference


def test_a_batch_of_pairs_equals_the_library_on_the_same_batch(tmp_path):
    """Same-size pairs are scored as one batch, which is what pyiqa gets: its values on the batch (float32
    convolutions give batch-size-dependent last digits, e.g. VIF, up to about 1e-6 from a batch of one)."""
    refs, outs = [], []
    for index, kind in enumerate(("jpeg", "blur", "noise")):
        image = real_image("astronaut.png")[index * 64 : index * 64 + 160, :160]
        refs.append(save_image(tmp_path / "ref" / f"{index}.png", image))
        outs.append(save_image(tmp_path / "out" / f"{index}.png", degrade(image, kind, seed=index)))
    names = ("vif", "gmsd", "nlpd")
    metrics = [f"pyiqa:{name}" for name in names]
    run = pipeline.score(tmp_path / "ref", tmp_path / "out", tmp_path / "run", scheduler="sync", threads=1,
                         progress=False, report=False, metrics=metrics)  # fmt: skip
    frame = run.frame.sort_values("key")
    for name in names:
        with torch.inference_mode():
            batch = pyiqa.create_metric(name, device="cpu")(*(torch.cat([rgb_unit(p) for p in paths])
                                                              for paths in (outs, refs)))  # fmt: skip
        assert frame[f"pyiqa_{name}"].tolist() == pytest.approx(batch.flatten().tolist(), abs=1e-12, rel=0)


@pytest.fixture(scope="module")
def piq_run(photos, tmp_path_factory) -> pd.DataFrame:
    """piq's metrics scored by a Dask worker process, which rebuilds each plugin from its column name."""
    return scored(photos, tmp_path_factory, [f"piq:{name}" for name in PIQ_METRICS], workers=1)


@pytest.mark.parametrize("name", PIQ_METRICS)
def test_piq_metrics_in_a_worker_process_equal_piq_called_directly(piq_run, name):
    function = getattr(piq, name)

    def direct(ref: str, out: str) -> torch.Tensor:
        return function(rgb_unit(out), rgb_unit(ref), data_range=1.0)

    assert largest_difference(piq_run, f"piq_{name}", direct) <= PARITY


@pytest.fixture(scope="module")
def torchmetrics_run(photos, tmp_path_factory) -> pd.DataFrame:
    metrics = [f"torchmetrics:{name}" for name in TORCHMETRICS_METRICS]
    return scored(photos, tmp_path_factory, metrics, scheduler="sync")


@pytest.mark.parametrize("name", TORCHMETRICS_METRICS)
def test_torchmetrics_metrics_equal_torchmetrics_called_per_pair(torchmetrics_run, name):
    keywords = {"data_range": 1.0} if "data_range" in tm_adapter.TORCHMETRICS_METRICS[name].keywords else {}
    function = getattr(tm_functional, name)

    def direct(ref: str, out: str) -> torch.Tensor:
        return function(rgb_unit(out), rgb_unit(ref), **keywords)

    assert largest_difference(torchmetrics_run, f"torchmetrics_{name}", direct) <= PARITY


# Weights: a network metric with seeded weights where the library looks for them, and without any


def test_a_network_metric_with_seeded_weights_equals_pyiqa_and_records_them(
    photos, seeded_pyiqa_lpips, tmp_path
):
    run = pipeline.score(*photos, tmp_path / "run", metrics="pyiqa:lpips", scheduler="sync", threads=1,
                         progress=False, report=False)  # fmt: skip
    metric = pyiqa.create_metric("lpips", device="cpu")
    with torch.inference_mode():
        difference = largest_difference(run.frame, "pyiqa_lpips", lambda ref, out: metric(out, ref))
    assert difference <= PARITY
    recorded = run.manifest["metric_plugins"]["pyiqa_lpips"]["weights_sha256"]
    for path in seeded_pyiqa_lpips:
        assert f"{path.name}={sha256_of(path)}" in recorded


def test_torchmetrics_lpips_built_once_equals_its_class_per_pair(photos, alex_home, no_download, tmp_path):
    selector = "torchmetrics:learned_perceptual_image_patch_similarity"
    run = pipeline.score(*photos, tmp_path / "run", metrics=selector, scheduler="sync", threads=1,
                         progress=False, report=False)  # fmt: skip
    metric = tm_modular.LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)

    def direct(ref: str, out: str) -> torch.Tensor:
        metric.reset()
        return metric(rgb_unit(out), rgb_unit(ref))

    column = "torchmetrics_learned_perceptual_image_patch_similarity"
    with torch.inference_mode():
        assert largest_difference(run.frame, column, direct) <= PARITY
    recorded = run.manifest["metric_plugins"][column]["weights_sha256"]
    assert f"{alex_home.name}={sha256_of(alex_home)}" in recorded and "alex.pth=" in recorded


def test_a_network_metric_offline_without_weights_stops_naming_the_file_and_folder(photos, offline, tmp_path):
    result = runner.invoke(app, ["score", *map(str, photos), "-o", str(tmp_path / "run"), "--metrics",
                                 "psnr,pyiqa:lpips"])  # fmt: skip
    one_line_error(result, 2, "pyiqa:lpips", "alexnet-owt-7be5be79.pth", str(offline))
    assert not (tmp_path / "run").exists()


def test_the_weights_file_in_pyiqa_s_own_folder_is_named_too(
    photos, alex_home, pyiqa_cache, offline, tmp_path
):
    result = runner.invoke(app, ["score", *map(str, photos), "-o", str(tmp_path / "run"), "--metrics",
                                 "pyiqa:lpips"])  # fmt: skip
    one_line_error(result, 2, "LPIPS_v0.1_alex-df73285e.pth", str(pyiqa_cache))


def test_a_weights_file_that_needs_unpickling_is_refused(photos, alex_home, pyiqa_cache, tmp_path):
    path = pyiqa_cache / "LPIPS_v0.1_alex-df73285e.pth"
    path.parent.mkdir(parents=True)
    torch.save({"lin0": Batch}, path)  # a class: loading it runs code, weights_only refuses it
    result = runner.invoke(app, ["score", *map(str, photos), "-o", str(tmp_path / "run"), "--metrics",
                                 "pyiqa:lpips"])  # fmt: skip
    one_line_error(result, 2, str(path), "weights_only")


def test_a_worker_whose_weights_differ_from_the_client_s_refuses_them(seeded_pyiqa_lpips):
    plugin = adapted_plugin("pyiqa_lpips")
    setup = plugin.prepare()
    layers = torch.load(seeded_pyiqa_lpips[1])
    torch.save({key: value + 1 for key, value in layers.items()}, seeded_pyiqa_lpips[1])
    with pytest.raises(WeightsError, match=r"LPIPS_v0\.1_alex-df73285e\.pth .* is not the one the client"):
        plugin.build_state(torch.device("cpu"), setup)


# Weights shipped from the client to a worker that has none: this process plays the worker after `prepare`


def as_a_worker_with_an_empty_home(monkeypatch, home: Path) -> None:
    """From here on, the libraries look for weights under `home` (TORCH_HOME), as a worker on another machine
    would: torchvision in `home/hub/checkpoints`, pyiqa in `home/hub/pyiqa`."""
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(home / "hub" / "pyiqa"))


def prepared_and_shipped(column: str) -> tuple:
    """(plugin, setup, what it ships) of an adapted metric, as the client makes them."""
    plugin = adapted_plugin(column)
    setup = plugin.prepare()
    return plugin, setup, plugin.ship(setup)


def last_bit_flipped(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def test_shipped_weights_are_written_where_the_library_looks_and_it_loads_them(
    photos, seeded_pyiqa_lpips, tmp_path, monkeypatch
):
    plugin, setup, shipped = prepared_and_shipped("pyiqa_lpips")
    assert sorted(item.file.name for item in shipped) == sorted(path.name for path in seeded_pyiqa_lpips)
    ref, out = (rgb_unit(str(folder / "0.png")) for folder in photos)
    on_the_client = plugin.build_state(torch.device("cpu"), setup)
    home = tmp_path / "worker-home"
    as_a_worker_with_an_empty_home(monkeypatch, home)
    on_the_worker = plugin.make_state(torch.device("cpu"), setup, shipped)
    alexnet, layers = seeded_pyiqa_lpips
    written = [home / "hub" / "checkpoints" / alexnet.name, home / "hub" / "pyiqa" / layers.name]
    assert files_under(home) == sorted(written)  # no temporary file left
    assert [sha256_of(path) for path in written] == [sha256_of(alexnet), sha256_of(layers)]
    with torch.inference_mode():
        assert on_the_worker(ref, out).tolist() == on_the_client(ref, out).tolist()


def test_shipped_bytes_that_do_not_hash_as_verified_are_refused(seeded_pyiqa_lpips, tmp_path, monkeypatch):
    plugin, setup, shipped = prepared_and_shipped("pyiqa_lpips")
    damaged = tuple(adapters.ShippedFile(item.file, last_bit_flipped(item.data)) for item in shipped)
    home = tmp_path / "worker-home"
    as_a_worker_with_an_empty_home(monkeypatch, home)
    with pytest.raises(WeightsError) as caught:
        plugin.make_state(torch.device("cpu"), setup, damaged)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("pyiqa:lpips: the bytes of the weights file ")
    assert "shipped from the client" in message and "refused" in message
    assert files_under(home) == []


def test_a_weights_file_changed_on_the_client_after_prepare_is_not_shipped(seeded_pyiqa_lpips):
    plugin = adapted_plugin("pyiqa_lpips")
    setup = plugin.prepare()
    layers = seeded_pyiqa_lpips[1]
    torch.save({key: value + 1 for key, value in torch.load(layers).items()}, layers)
    with pytest.raises(WeightsError) as caught:
        plugin.ship(setup)
    message = str(caught.value)
    assert "\n" not in message and f"the weights file {layers} changed since it was verified" in message


def test_a_worker_file_of_other_bytes_is_refused_though_the_client_s_were_shipped(
    seeded_pyiqa_lpips, tmp_path, monkeypatch
):
    plugin, setup, shipped = prepared_and_shipped("pyiqa_lpips")
    home = tmp_path / "worker-home"
    other = home / "hub" / "pyiqa" / seeded_pyiqa_lpips[1].name
    other.parent.mkdir(parents=True)
    torch.save({key: value + 1 for key, value in torch.load(seeded_pyiqa_lpips[1]).items()}, other)
    as_a_worker_with_an_empty_home(monkeypatch, home)
    with pytest.raises(WeightsError, match=r"LPIPS_v0\.1_alex-df73285e\.pth .* is not the one the client"):
        plugin.make_state(torch.device("cpu"), setup, shipped)


def test_a_worker_that_cannot_make_the_library_s_folder_says_which_and_what_to_do(
    seeded_pyiqa_lpips, tmp_path, monkeypatch
):
    plugin, setup, shipped = prepared_and_shipped("pyiqa_lpips")
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    as_a_worker_with_an_empty_home(monkeypatch, blocker / "home")
    with pytest.raises(WeightsError) as caught:
        plugin.make_state(torch.device("cpu"), setup, shipped)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("pyiqa:lpips cannot be built: ")
    assert f"weights folder {blocker}" in message and "set TORCH_HOME to a writable folder" in message


def test_shipped_bytes_that_cannot_be_written_name_the_folder_and_what_to_do(tmp_path):
    data = b"toy weights"
    file = adapters.WeightsFile("toy.pth", "/on/the/client/toy.pth", hashlib.sha256(data).hexdigest())
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")

    def construct(device):
        torch.hub.download_url_to_file("https://example.org/toy.pth", str(blocker / "cache" / "toy.pth"))
        return lambda ref, out: (ref - out).abs().flatten(1).mean(1)

    shipped = (adapters.ShippedFile(file, data),)
    plugin = adapters.adapted_plugin(MetricSpec("toy_net", False, "", "", 0.01), "iqa-pipeline", construct)
    with pytest.raises(WeightsError) as caught:
        plugin.make_state(torch.device("cpu"), (file,), shipped)
    assert str(caught.value).startswith(
        f"toy:net: the weights file toy.pth shipped from the client cannot be written to {blocker / 'cache'}"
    )
    assert "set TORCH_HOME to a writable folder" in str(caught.value)


# Names, directions, messages


@pytest.mark.parametrize("adapter", [pyiqa_adapter.ADAPTER, piq_adapter.ADAPTER, tm_adapter.ADAPTER])
def test_every_offered_metric_has_a_column_that_names_it_alone(adapter):
    for name in adapter.names():
        column = metric_column(f"{adapter.prefix}:{name}")
        assert adapted_name(column) == (adapter.prefix, name)
        assert METRICS[column].name == column


def test_directions_are_the_libraries_own_where_they_declare_one():
    for name in pyiqa_adapter.full_reference_metrics():
        assert METRICS[f"pyiqa_{name}"].higher_is_better is not DEFAULT_CONFIGS[name].get(
            "lower_better", False
        )
    for name, declared in tm_adapter.TORCHMETRICS_METRICS.items():
        expected = getattr(tm_modular, declared.class_name).higher_is_better
        assert METRICS[f"torchmetrics_{name}"].higher_is_better is expected
    assert METRICS["piq_gmsd"].higher_is_better is False and METRICS["piq_fsim"].higher_is_better is True


def test_the_config_takes_selectors_and_stores_columns():
    config = validate_config({"metrics": "psnr, pyiqa:fsim,piq_gmsd"})
    assert config.metrics == ("psnr", "pyiqa_fsim", "piq_gmsd")


@pytest.mark.parametrize(
    ("selector", "needles"),
    [
        ("pyiqa:nope", ("unknown pyiqa metric 'nope'", "pyiqa:fsim", "pyiqa:lpips")),
        ("pyiqa:niqe", ("no-reference", "pyiqa:cw_ssim")),
        ("piq:brisque", ("no declared direction", "piq:gmsd")),
        ("torchmetrics:total_variation", ("not among", "torchmetrics:structural_similarity_index_measure")),
        ("nolib:fsim", ("unknown metric 'nolib:fsim'", "pyiqa:NAME")),
    ],
)
def test_an_unknown_metric_lists_what_the_library_offers(selector, needles, tmp_path):
    result = runner.invoke(app, ["score", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "run"),
                                 "--metrics", f"psnr,{selector}"])  # fmt: skip
    one_line_error(result, 2, *needles)


def test_a_missing_library_names_the_extra_that_installs_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # `import pyiqa` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "pipeline.adapters.pyiqa")
    for cached in (metric_adapter, adapted_plugin):
        cached.cache_clear()
    try:
        result = runner.invoke(app, ["score", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "run"),
                                     "--metrics", "pyiqa:fsim"])  # fmt: skip
    finally:
        for cached in (metric_adapter, adapted_plugin):
            cached.cache_clear()
    one_line_error(result, 2, "pyiqa", "pip install 'iqa-pipeline[pyiqa]'")


def test_compare_treats_an_adapted_metric_by_its_direction():
    base = pd.DataFrame({"key": ["a", "b"], "group": "", "status": "ok", "pyiqa_gmsd": [0.05, 0.05]})
    worse = base.assign(pyiqa_gmsd=[0.08, 0.09])  # GMSD is a distance: higher is worse
    comparison = compare_frames(base, worse)
    assert comparison.regressed_metrics == ["pyiqa_gmsd"]
    assert compare_frames(worse, base).regressed_metrics == []


def test_a_pair_below_the_library_s_smallest_side_gets_a_null_and_a_warning(tmp_path):
    image = real_image("astronaut.png")[:120, :120]
    save_image(tmp_path / "ref" / "a.png", image)
    save_image(tmp_path / "out" / "a.png", degrade(image, "noise"))
    run = pipeline.score(tmp_path / "ref", tmp_path / "out", tmp_path / "run", scheduler="sync",
                         progress=False, report=False, metrics="psnr,piq:multi_scale_ssim")  # fmt: skip
    row = run.frame.iloc[0]
    assert row["status"] == "ok" and pd.isna(row["piq_multi_scale_ssim"])
    assert any("piq_multi_scale_ssim left null" in warning for warning in row["warnings"])


@pytest.mark.parametrize(
    ("raised", "error", "needles"),
    [
        (ModuleNotFoundError("No module named 'timm'", name="timm"), ConfigError, ("needs the module timm",)),
        (OSError("urlopen error"), WeightsError, ("toy:net cannot be built", "urlopen error", "online")),
        (RuntimeError("bad option"), ConfigError, ("toy:net cannot be built: RuntimeError: bad option",)),
    ],
)
def test_a_metric_the_library_cannot_build_is_one_clear_error(raised, error, needles):
    def construct(device):
        raise raised

    plugin = adapters.adapted_plugin(MetricSpec("toy_net", False, "", "", 0.01), "iqa-pipeline", construct)
    with pytest.raises(error) as caught:
        plugin.prepare()
    assert all(needle in str(caught.value) for needle in needles), caught.value
    assert type(caught.value) is error
