"""End to end on real Dask processes: an existing cluster by address, scheduler file and
DASK_SCHEDULER_ADDRESS, a worker that cannot see the client's LPIPS weights or an adapted metric's, a worker
killed while scoring, a scoring process killed and resumed. (Tests of `pipeline/cluster.py` itself are in
test_cluster.py.)"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dask
import pandas as pd
import pytest
from conftest import LPIPS_TOL, free_port, install, make_dataset, s3_environment, sha256_of, start_s3_server
from distributed import Client
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.cluster import ADDRESS_VARIABLE
from pipeline.config import ScoreConfig
from pipeline.metrics.lpips_weights import backbone_cache_path
from pipeline.results import load_results, part_paths
from pipeline.scoring import score_folders

DASK = str(Path(sys.executable).parent / "dask")
METRICS = ("psnr", "ssim", "ms_ssim", "mse")
COMPARED = ["key", "status", *METRICS, "ref_sha256", "out_sha256"]
runner = CliRunner()
pytestmark = pytest.mark.slow


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def can_hide_folders() -> bool:
    """Whether a process can start in a mount namespace of its own and mount a tmpfs (root on Linux)."""
    probe = ["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False


def hiding(folder: Path, command: list[str]) -> list[str]:
    """`command` run in a mount namespace of its own where `folder` is an empty tmpfs."""
    script = 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(folder), *command]


class DaskCluster:
    """A `dask scheduler` and N `dask worker` processes on 127.0.0.1, stopped by `close()`.

    `worker_env`: variables added to the workers' environment; `hidden`: a folder the workers see empty.
    """

    def __init__(
        self,
        tmp_path: Path,
        workers: int = 2,
        worker_env: dict[str, str] | None = None,
        hidden: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler_file = tmp_path / "scheduler.json"
        common = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp_path}
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--dashboard-address", ":0",
             "--scheduler-file", str(self.scheduler_file)],
            **common,
        )  # fmt: skip
        wait_for(self.scheduler_file.exists, 60, "the scheduler file")
        command = [DASK, "worker", self.address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                   "--dashboard-address", ":0", "--death-timeout", "60"]  # fmt: skip
        self.workers = [
            subprocess.Popen(
                command if hidden is None else hiding(hidden, command),
                env={**os.environ, "OMP_NUM_THREADS": "1", **(worker_env or {})},
                **common,
            )
            for _ in range(workers)
        ]
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def cluster(tmp_path):
    started = DaskCluster(tmp_path)
    yield started
    started.close()


def test_existing_cluster_rows_equal_a_local_run(tmp_path, cluster):
    ref, out = make_dataset(tmp_path, 12)
    base = ["--metrics", ",".join(METRICS), "--no-report", "--no-progress", "--shard-pairs", "2"]
    by_address = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "remote"), *base,
                                     "--scheduler", cluster.address])  # fmt: skip
    assert by_address.exit_code == 0, by_address.output
    by_file = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "file"), *base,
                                  "--scheduler-file", str(cluster.scheduler_file)])  # fmt: skip
    assert by_file.exit_code == 0, by_file.output
    local = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "local"), *base,
                                "--scheduler", "sync"])  # fmt: skip
    assert local.exit_code == 0, local.output
    expected = load_results(tmp_path / "local")[COMPARED]
    pd.testing.assert_frame_equal(load_results(tmp_path / "remote")[COMPARED], expected)
    pd.testing.assert_frame_equal(load_results(tmp_path / "file")[COMPARED], expected)
    manifest = json.loads((tmp_path / "remote" / "manifest.json").read_text())
    assert cluster.address in manifest["execution"]


@pytest.fixture
def scheduler_variable(monkeypatch):
    """Sets DASK_SCHEDULER_ADDRESS as a shell would (Dask's config is read again); unset after the test."""

    def set_to(address: str) -> None:
        monkeypatch.setenv(ADDRESS_VARIABLE, address)
        dask.config.refresh()

    yield set_to
    monkeypatch.delenv(ADDRESS_VARIABLE, raising=False)
    dask.config.refresh()


def test_scheduler_address_from_the_environment_is_used_and_said(tmp_path, cluster, scheduler_variable):
    ref, out = make_dataset(tmp_path, 4, size=64)
    scheduler_variable(cluster.address)
    base = ["score", str(ref), str(out), "--metrics", "psnr", "--no-report", "--no-progress"]
    from_variable = runner.invoke(app, [*base, "-o", str(tmp_path / "variable")])
    assert from_variable.exit_code == 0, from_variable.output
    assert f"Using the Dask scheduler {cluster.address} from DASK_SCHEDULER_ADDRESS" in from_variable.output
    manifest = json.loads((tmp_path / "variable" / "manifest.json").read_text())
    assert manifest["execution"] == f"Dask cluster {cluster.address} (from DASK_SCHEDULER_ADDRESS)"
    sync = runner.invoke(app, [*base, "-o", str(tmp_path / "sync"), "--scheduler", "sync"])
    assert sync.exit_code == 0, sync.output
    assert "Using the Dask scheduler" not in sync.output
    assert json.loads((tmp_path / "sync" / "manifest.json").read_text())["execution"] == "in-process (sync)"


def score_remotely_and_locally(
    cluster: DaskCluster,
    probe: Callable[[], tuple[bool, bool]],
    ref: Path,
    out: Path,
    tmp_path: Path,
    options: dict,
    network_column: str,
) -> tuple[pipeline.Run, pipeline.Run]:
    """(remote, local): the run on `cluster`'s one worker, after `probe` on it found no weights to read
    ((False, False)), and the same run with the sync scheduler; their PSNR and `network_column` equal."""
    try:
        with Client(cluster.address, timeout=30) as client:
            assert list(client.run(probe).values()) == [(False, False)]  # the worker has no weights to read
        remote = pipeline.score(ref, out, tmp_path / "remote", scheduler=cluster.address, **options)
    finally:
        cluster.close()
    local = pipeline.score(ref, out, tmp_path / "local", scheduler="sync", **options)
    columns = ["key", "status", "psnr", network_column]
    assert (remote.frame["status"] == "ok").all() and len(remote.frame) == 6
    pd.testing.assert_frame_equal(remote.frame[columns], local.frame[columns], rtol=0, atol=LPIPS_TOL)
    return remote, local


@pytest.mark.skipif(not can_hide_folders(), reason="needs `unshare -m` and tmpfs mounts (root on Linux)")
def test_a_worker_without_the_weights_scores_lpips_as_a_local_run(tmp_path, alex_weights):
    weights = install(alex_weights, tmp_path / "weights" / "alexnet-seeded.pth")
    torch_home = tmp_path / "worker-torch-home"
    torch_home.mkdir()
    ref, out = make_dataset(tmp_path, 6, size=96)
    options = {
        "metrics": ("psnr", "lpips"),
        "lpips_weights": str(weights),
        "report": False,
        "progress": False,
    }
    cluster = DaskCluster(
        tmp_path, workers=1, worker_env={"TORCH_HOME": str(torch_home)}, hidden=weights.parent
    )

    def probe() -> tuple[bool, bool]:
        return weights.exists(), backbone_cache_path("alex").exists()

    remote, _ = score_remotely_and_locally(cluster, probe, ref, out, tmp_path, options, "lpips")
    assert remote.manifest["lpips_backbone"] == str(weights)
    assert remote.manifest["lpips_backbone_sha256"] == sha256_of(weights)


@pytest.mark.skipif(not can_hide_folders(), reason="needs `unshare -m` and tmpfs mounts (root on Linux)")
def test_a_worker_without_the_weights_scores_an_adapted_network_metric_as_a_local_run(
    tmp_path, tmp_path_factory, seeded_pyiqa_lpips
):
    """pyiqa's LPIPS with seeded weights in the client's TORCH_HOME (tmp_path), which the worker sees as an
    empty tmpfs: the worker writes the weights shipped from the client into its own, empty TORCH_HOME and
    gives the values of a local run."""
    ref, out = make_dataset(tmp_path_factory.mktemp("images"), 6, size=96)
    worker_home = tmp_path_factory.mktemp("worker-torch-home")
    options = {"metrics": ("psnr", "pyiqa:lpips"), "report": False, "progress": False}
    cluster = DaskCluster(tmp_path, workers=1, worker_env={"TORCH_HOME": str(worker_home)}, hidden=tmp_path)

    def probe() -> tuple[bool, bool]:
        return any(tmp_path.iterdir()), any(worker_home.iterdir())

    remote, local = score_remotely_and_locally(cluster, probe, ref, out, tmp_path, options, "pyiqa_lpips")
    assert remote.manifest["metric_plugins"] == local.manifest["metric_plugins"]
    alexnet, layers = seeded_pyiqa_lpips
    written = {path.relative_to(worker_home): sha256_of(path) for path in worker_home.rglob("*.pth")}
    assert written == {
        Path("hub/checkpoints") / alexnet.name: sha256_of(alexnet),
        Path("hub/pyiqa") / layers.name: sha256_of(layers),
    }


@pytest.mark.skipif(not can_hide_folders(), reason="needs a mount namespace (unshare -m) to hide folders")
def test_workers_without_a_shared_disk_score_a_run_in_object_storage(tmp_path, alex_weights, monkeypatch):
    """The images and the run directory in S3, the weights shipped: the worker sees none of the client's files
    (its view of tmp_path is an empty tmpfs) and still gives the values of a local run."""
    s3fs = pytest.importorskip("s3fs")
    port = free_port()
    server = start_s3_server(port)
    environment = s3_environment(f"http://127.0.0.1:{port}")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    data = tmp_path / "client"
    weights = install(alex_weights, data / "weights" / "alexnet-seeded.pth")
    ref, out = make_dataset(data, 6, size=96)
    store = s3fs.S3FileSystem()
    store.mkdir("shared-nothing")
    store.put(f"{ref}/", "shared-nothing/ref/", recursive=True)
    store.put(f"{out}/", "shared-nothing/out/", recursive=True)
    options = {"metrics": ("psnr", "ssim", "lpips"), "lpips_weights": str(weights), "progress": False}
    cluster = DaskCluster(tmp_path, workers=1, worker_env=environment, hidden=data)
    try:
        with Client(cluster.address, timeout=30) as client:
            assert list(client.run(lambda: any(data.iterdir())).values()) == [False]
        remote = pipeline.score(
            "s3://shared-nothing/ref", "s3://shared-nothing/out", "s3://shared-nothing/run",
            scheduler=cluster.address, **options,
        )  # fmt: skip
        remote_rows = remote.frame
    finally:
        cluster.close()
        server.terminate()
        server.wait(10)
    local = pipeline.score(ref, out, tmp_path / "local", scheduler="sync", **options)
    columns = ["key", "status", "psnr", "ssim", "lpips", "ref_sha256", "out_sha256"]
    assert (remote_rows["status"] == "ok").all() and len(remote_rows) == 6
    pd.testing.assert_frame_equal(remote_rows[columns], local.frame[columns], rtol=0, atol=LPIPS_TOL)
    assert remote.report_path == "s3://shared-nothing/run/report.html"


def test_killed_worker_loses_nothing(tmp_path, cluster, caplog):
    ref, out = make_dataset(tmp_path, 30, size=240)
    config = ScoreConfig(
        metrics=METRICS, scheduler=cluster.address, shard_pairs=1, max_in_flight=6, report=False
    )
    outcome = {}

    def run() -> None:
        try:
            outcome["result"] = score_folders(ref, out, tmp_path / "run", config, progress=False)
        except BaseException as exc:  # the assertion below reports it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        thread.start()
        wait_for(lambda: len(part_paths(tmp_path / "run")) >= 3, 120, "the first parts")
        os.kill(cluster.workers[0].pid, signal.SIGKILL)
        thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    lost = [r.getMessage() for r in caplog.records if "left the cluster unexpectedly" in r.getMessage()]
    assert len(lost) == 1 and lost[0].startswith("Dask worker tcp://127.0.0.1:"), lost
    rows = load_results(tmp_path / "run", latest_only=False)
    assert len(rows) == 30 and rows["key"].is_unique
    assert (rows["status"] == "ok").all()
    assert cluster.workers[0].poll() is not None


def test_killed_run_resumes_with_every_pair_once(tmp_path):
    ref, out = make_dataset(tmp_path, 24, size=240)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "pipeline", "score", str(ref), str(out), "-o", str(run_dir),
               "--metrics", ",".join(METRICS), "--scheduler", "sync", "--shard-pairs", "1", "--no-report",
               "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(part_paths(run_dir)) >= 5, 120, "some parts")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished = {path.name: path.read_bytes() for path in part_paths(run_dir)}
    assert 5 <= len(finished) < 24
    (run_dir / "scores" / ".part-99999.parquet.1.tmp").write_bytes(b"half-written")
    assert len(load_results(run_dir)) == len(finished)

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = load_results(run_dir, latest_only=False)
    assert len(rows) == 24 and rows["key"].is_unique
    for name, data in finished.items():
        assert (run_dir / "scores" / name).read_bytes() == data
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["resume"] == {"reused": len(finished), "scored": 24 - len(finished)}
    assert not list((run_dir / "scores").glob("*.tmp"))
