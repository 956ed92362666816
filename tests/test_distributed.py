"""Real Dask processes: an existing cluster by address and scheduler file, worker loss, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import degrade, real_image
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import ScoreConfig
from pipeline.errors import ClusterError
from pipeline.results import load_results, part_paths
from pipeline.scoring import score_folders

DASK = str(Path(sys.executable).parent / "dask")
METRICS = ("psnr", "ssim", "ms_ssim", "mse")
COMPARED = ["key", "status", *METRICS, "ref_sha256", "out_sha256"]
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class DaskCluster:
    """A `dask scheduler` and N `dask worker` processes on 127.0.0.1, stopped by `close()`."""

    def __init__(self, tmp_path: Path, workers: int = 2) -> None:
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
        self.workers = [
            subprocess.Popen(
                [
                    DASK,
                    "worker",
                    self.address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                    "--dashboard-address",
                    ":0",
                    "--death-timeout",
                    "60",
                ],
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                **common,
            )
            for _ in range(workers)
        ]
        from distributed import Client

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


def make_dataset(root: Path, count: int, size: int = 200) -> tuple[Path, Path]:
    ref, out = root / "ref", root / "out"
    names = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png", "motorcycle_left.png")
    for index in range(count):
        image = real_image(names[index % len(names)])
        offset = (index * 7) % 40
        crop = image[offset : offset + size, offset : offset + size]
        for folder, array in ((ref, crop), (out, degrade(crop, "noise", seed=index))):
            path = folder / f"g{index % 3}" / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return ref, out


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


def test_unreachable_scheduler_fails_fast_naming_the_address(tmp_path):
    ref, out = make_dataset(tmp_path, 1)
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    config = ScoreConfig(metrics=("psnr",), scheduler=address, report=False)
    with pytest.raises(ClusterError, match=address):
        score_folders(ref, out, tmp_path / "run", config, progress=False)
    assert time.monotonic() - started < 60


def test_killed_worker_loses_nothing(tmp_path, cluster):
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
    thread.start()
    wait_for(lambda: len(part_paths(tmp_path / "run")) >= 3, 120, "the first parts")
    os.kill(cluster.workers[0].pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
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


def test_resume_rescores_changed_files(tmp_path):
    ref, out = make_dataset(tmp_path, 4)
    config = ScoreConfig(metrics=("psnr",), scheduler="sync", report=False)
    score_folders(ref, out, tmp_path / "run", config, progress=False)
    changed = out / "g1" / "0001.png"
    Image.fromarray(degrade(real_image("camera.png")[:200, :200], "blur")).save(changed)
    result = score_folders(ref, out, tmp_path / "run", config, resume=True, progress=False)
    assert result.manifest["resume"] == {"reused": 3, "scored": 1}
    rows = load_results(tmp_path / "run")
    assert len(rows) == 4 and rows.set_index("key").loc["g1/0001", "run_id"] == result.manifest["run_id"]
    other = ScoreConfig(metrics=("psnr", "mse"), scheduler="sync", report=False)
    again = score_folders(ref, out, tmp_path / "run", other, resume=True, progress=False)
    assert again.manifest["resume"] == {"reused": 0, "scored": 4}


def test_pinned_cluster_starts_each_worker_with_its_environment():
    from distributed import Client

    from pipeline.cluster import start_pinned_cluster

    cluster = start_pinned_cluster([{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}])
    try:
        with Client(cluster) as client:
            seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
    finally:
        cluster.close()
    assert sorted(seen.values()) == ["0", "1"]


@pytest.mark.parametrize("workers", [None, 2])
def test_embedded_workers_do_not_sample_their_threads(workers):
    """No stack sampling for the dashboard's profile page: in-process it takes the GIL from the scoring
    threads. Worker processes get the same setting from the cluster they are started by."""
    from pipeline.cluster import open_cluster

    with open_cluster(None, workers=workers, device="cpu") as execution:
        sampling = execution.executor.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    assert len(sampling) == (workers or 1)
    assert not any(sampling.values())


def test_local_plan_never_oversubscribes_cores():
    from pipeline.cluster import available_cores, plan_local_cluster

    plan = plan_local_cluster(None, None, "cpu")
    assert plan.workers * plan.threads_per_worker * plan.torch_threads <= available_cores()
    assert plan.gpus == 0 and plan.torch_threads == 1
    assert plan_local_cluster(1, None, "cpu").torch_threads == available_cores()


@pytest.mark.parametrize(
    ("cores", "threads", "expected"),
    [
        (1, None, (1, 1, 1, False)),
        (2, None, (1, 2, 1, False)),
        (4, None, (1, 4, 1, False)),
        (8, None, (2, 4, 1, True)),
        (16, None, (4, 4, 1, True)),
        (6, None, (2, 3, 1, True)),
        (8, 2, (1, 4, 2, False)),
        (2, 4, (1, 1, 4, False)),
    ],
)
def test_local_plan_threads_in_process_up_to_four_then_processes(monkeypatch, cores, threads, expected):
    from pipeline import cluster as cluster_module

    monkeypatch.setattr(cluster_module, "available_cores", lambda: cores)
    plan = cluster_module.plan_local_cluster(None, threads, "cpu")
    assert (plan.workers, plan.threads_per_worker, plan.torch_threads, plan.processes) == expected
