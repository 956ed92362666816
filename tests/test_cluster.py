"""pipeline/cluster.py: sizing and starting the embedded cluster, its dashboard, connecting to an existing
one, and bounded submission."""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.request

import dask
import pytest
from conftest import free_port
from distributed import Client, WorkerPlugin

from pipeline import cluster as cluster_module
from pipeline.cluster import (
    CONNECT_TIMEOUT_S,
    SyncExecutor,
    available_cores,
    check_local_device,
    configured_scheduler,
    open_cluster,
    plan_local_cluster,
    run_bounded,
    start_pinned_cluster,
)
from pipeline.config import ScoreConfig
from pipeline.errors import ClusterError, UsageError
from pipeline.scoring import score_folders
from pipeline.worker_warnings import WorkerWarnings

# Sizing the embedded cluster


def test_local_plan_never_oversubscribes_cores():
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
    monkeypatch.setattr(cluster_module, "available_cores", lambda: cores)
    plan = cluster_module.plan_local_cluster(None, threads, "cpu")
    assert (plan.workers, plan.threads_per_worker, plan.torch_threads, plan.processes) == expected


def test_local_plan_with_workers_shares_the_cores(monkeypatch):
    monkeypatch.setattr(cluster_module, "available_cores", lambda: 8)
    plan = plan_local_cluster(3, None, "cpu")
    assert (plan.workers, plan.threads_per_worker, plan.torch_threads, plan.processes) == (3, 1, 2, True)
    assert plan.describe() == "local cluster: 3 worker process(es) x 2 torch thread(s)"
    assert plan_local_cluster(None, None, "cpu").describe() == (
        "local cluster: 2 worker process(es) x 4 thread(s) x 1 torch thread(s)"
    )


def test_local_plan_gives_each_gpu_one_worker(monkeypatch, accelerators):
    monkeypatch.setattr(cluster_module, "available_cores", lambda: 16)
    accelerators(cuda=2, mps=True)  # CUDA comes first
    plan = plan_local_cluster(None, None, "auto")
    assert (plan.workers, plan.gpus, plan.torch_threads, plan.processes) == (2, 2, 8, True)
    assert plan.describe().endswith("x 8 torch thread(s), 2 GPU(s), one per worker")
    assert plan_local_cluster(None, None, "cpu").gpus == 0
    assert plan_local_cluster(1, None, "cuda").gpus == 1


def test_local_plan_gives_apple_mps_one_worker_in_this_process(monkeypatch, accelerators):
    monkeypatch.setattr(cluster_module, "available_cores", lambda: 8)
    accelerators(cuda=0, mps=True)
    for device in ("auto", "mps"):
        plan = plan_local_cluster(None, None, device)
        assert (plan.workers, plan.threads_per_worker, plan.torch_threads, plan.processes) == (1, 1, 8, False)
        assert plan.mps and plan.gpus == 0
    assert plan.describe().endswith("1 in-process worker x 1 thread(s) x 8 torch thread(s), Apple MPS")
    assert plan_local_cluster(None, 2, "mps").torch_threads == 2
    assert not plan_local_cluster(None, None, "cpu").mps
    assert plan_local_cluster(2, None, "mps").workers == 2  # --workers: that many processes, each on MPS


@pytest.mark.parametrize(("device", "name"), [("cuda", "CUDA"), ("mps", "Apple MPS")])
def test_an_accelerator_asked_for_and_absent_is_a_usage_error(accelerators, device, name):
    accelerators(cuda=0, mps=False)
    with pytest.raises(UsageError, match=f"--device {device} was asked for, but no {name} device is visible"):
        plan_local_cluster(None, None, device)


# Starting clusters


@pytest.mark.slow
def test_embedded_cluster_dashboard_answers_on_localhost():
    with open_cluster(None, device="cpu") as execution:
        link = execution.dashboard_link
        assert link is not None and link.startswith("http://127.0.0.1:") and link.endswith("/status")
        with urllib.request.urlopen(link, timeout=30) as response:
            assert response.status == 200
        plan = plan_local_cluster(None, None, "cpu")
        assert execution.description == plan.describe()
        assert execution.task_threads == plan.workers * plan.threads_per_worker


def test_threads_and_sync_executors():
    with open_cluster("threads", workers=3) as execution:
        assert execution.description == "local threads (3)" and execution.task_threads == 3
        assert execution.executor.submit(sum, [1, 2, 3]).result() == 6
    with open_cluster("sync") as execution:
        assert isinstance(execution.executor, SyncExecutor)
        assert execution.task_threads == 1 and execution.dashboard_link is None


@pytest.mark.slow
@pytest.mark.parametrize("workers", [None, 2])
def test_embedded_workers_do_not_sample_their_threads(workers):
    """No stack sampling for the dashboard's profile page: in-process it takes the GIL from the scoring
    threads. Worker processes get the same setting from the cluster they are started by."""
    with open_cluster(None, workers=workers, device="cpu") as execution:
        sampling = execution.executor.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    assert len(sampling) == (workers or 1)
    assert not any(sampling.values())


@pytest.mark.slow
def test_pinned_cluster_starts_each_worker_with_its_environment():
    cluster = start_pinned_cluster([{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}])
    try:
        with Client(cluster) as client:
            seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
    finally:
        cluster.close()
    assert sorted(seen.values()) == ["0", "1"]


# An existing cluster


@pytest.mark.parametrize(
    "given",
    [
        {"scheduler": "tcp://127.0.0.1:1", "workers": 2},
        {"scheduler": "tcp://127.0.0.1:1", "threads": 2},
        {"scheduler_file": "scheduler.json", "workers": 1},
    ],
)
def test_local_sizes_with_an_existing_cluster_are_a_usage_error(given):
    cluster = open_cluster(**given)
    with pytest.raises(UsageError, match="cannot be used with --scheduler ADDRESS or --scheduler-file"):
        cluster.__enter__()


def test_configured_scheduler_gives_way_to_sync_threads_and_an_address():
    with dask.config.set({"scheduler-address": f"tcp://127.0.0.1:{free_port()}"}):
        assert configured_scheduler()[1] == "Dask's config (scheduler-address)"
        with open_cluster("sync") as execution:
            assert isinstance(execution.executor, SyncExecutor)
        with open_cluster("threads", workers=1) as execution:
            assert execution.description == "local threads (1)"
        with pytest.raises(UsageError) as raised:
            open_cluster(workers=2).__enter__()
    assert "Dask's config (scheduler-address) names the Dask scheduler tcp://127.0.0.1:" in str(raised.value)
    assert "unset it to start a local cluster" in str(raised.value)
    assert configured_scheduler() is None


class MissingOnTheWorkers(WorkerPlugin):
    """A plugin whose setup fails as it does on a worker without iqa-pipeline."""

    name = "missing-on-the-workers"

    def setup(self, worker: object) -> None:
        raise ModuleNotFoundError("No module named 'pipeline'")


def test_workers_that_cannot_set_up_a_plugin_are_a_cluster_error():
    with open_cluster("threads", workers=1) as execution:
        with pytest.raises(ClusterError) as raised:
            execution.register(MissingOnTheWorkers())
        assert execution.plugins == []
    message = str(raised.value)
    assert "cannot set up iqa-pipeline's worker plugin 'missing-on-the-workers'" in message
    assert "ModuleNotFoundError: No module named 'pipeline'" in message and "install iqa-pipeline" in message


@pytest.mark.slow  # waits out the connect timeout
@pytest.mark.timeout(120)  # a guard against retrying forever, not a measurement
def test_unreachable_scheduler_fails_fast_naming_the_address(photo_folders, tmp_path):
    ref, out = photo_folders
    address = f"tcp://127.0.0.1:{free_port()}"
    config = ScoreConfig(metrics=("psnr",), scheduler=address, report=False)
    with pytest.raises(ClusterError, match=address) as raised:
        score_folders(ref, out, tmp_path / "run", config, progress=False)
    assert f"within {CONNECT_TIMEOUT_S} s" in str(raised.value)
    assert "Check the address and that the scheduler is running" in str(raised.value)
    assert not (tmp_path / "run" / "scores").exists() or not any((tmp_path / "run" / "scores").iterdir())


# Bounded submission


def test_run_bounded_in_sync_passes_each_result_or_error_in_order():
    def halve(item: int) -> float:
        if item == 3:
            raise ValueError("three")
        return item / 2

    outcomes = list(run_bounded(SyncExecutor(), halve, range(5), max_in_flight=2))
    assert [(item, result) for item, result, _ in outcomes] == [
        (0, 0.0),
        (1, 0.5),
        (2, 1.0),
        (3, None),
        (4, 2.0),
    ]
    errors = [error for _, _, error in outcomes]
    assert isinstance(errors[3], ValueError) and errors[:3] == [None] * 3 and errors[4] is None


def test_run_bounded_keeps_at_most_max_in_flight_outstanding():
    lock = threading.Lock()

    class Counting:
        def __init__(self, client: Client) -> None:
            self.client, self.submitted = client, 0

        def submit(self, *args, **kwargs):
            with lock:
                self.submitted += 1
            return self.client.submit(*args, **kwargs)

    def square(item: int, offset: int) -> int:
        if item == 5:
            raise RuntimeError("five")
        return item * item + offset

    with open_cluster("threads", workers=2) as execution:
        executor = Counting(execution.executor)
        seen, most_outstanding = {}, 0
        for item, result, error in run_bounded(executor, square, range(12), 10, max_in_flight=3):
            seen[item] = error if error is not None else result
            most_outstanding = max(most_outstanding, executor.submitted - len(seen))
    assert most_outstanding <= 3 and executor.submitted == 12
    assert sorted(seen) == list(range(12))
    assert isinstance(seen.pop(5), RuntimeError)
    assert seen == {item: item * item + 10 for item in seen}


# Warnings of workers


def test_worker_warnings_are_shown_once_per_worker_and_kind(caplog):
    warnings = WorkerWarnings()
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        for percent in (85, 86, 85):
            warnings.on_record(
                (0.0, {"worker": "tcp://a:1", "levelno": 30, "msg": f"Worker is at {percent}%"})
            )
        warnings.on_record((0.0, {"worker": "tcp://b:1", "levelno": 30, "msg": "Worker is at 85%"}))
        warnings.on_memory_restart((0.0, {"worker": "tcp://a:1", "pid": 7, "rss": 3 * 2**30}))
        warnings.on_cluster_event((0.0, {"action": "remove-worker", "worker": "tcp://b:1", "expected": True}))
        warnings.on_cluster_event((0.0, {"action": "add-worker", "worker": "tcp://c:1"}))
        warnings.on_cluster_event(
            (0.0, {"action": "remove-worker", "worker": "tcp://c:1", "processing-tasks": {"x", "y"}})
        )
    shown = [record.getMessage() for record in caplog.records]
    assert shown[:2] == ["Dask worker tcp://a:1: Worker is at 85%", "Dask worker tcp://b:1: Worker is at 85%"]
    assert shown[2].startswith(
        "Dask worker tcp://a:1: its process (pid 7) used 3.00 GiB, more than its memory"
    )
    assert "dask worker --memory-limit" in shown[2]
    assert shown[3].startswith("Dask worker tcp://c:1: left the cluster unexpectedly with 2 task(s) running")
    assert len(shown) == 4


def test_a_forwarded_worker_record_shows_its_first_line_and_never_a_traceback(caplog):
    """A worker's record with exc_info arrives formatted with its traceback (as a heartbeat that fails while
    the cluster closes does): the console gets the first line; the traceback is logged at DEBUG only."""
    message = (
        "Failed to communicate with scheduler during heartbeat.\n"
        "Traceback (most recent call last):\n"
        '  File "distributed/comm/tcp.py", line 226, in read\n'
        "distributed.comm.core.CommClosedError: in <TCP (closed)>"
    )
    warnings = WorkerWarnings()
    with caplog.at_level(logging.DEBUG, logger="pipeline"):
        warnings.on_record((0.0, {"worker": "tcp://a:1", "levelno": 40, "msg": message}))
    shown = [(record.levelno, record.getMessage()) for record in caplog.records]
    headline = "Dask worker tcp://a:1: Failed to communicate with scheduler during heartbeat."
    assert (logging.ERROR, headline) in shown
    assert all("Traceback" not in text for level, text in shown if level > logging.DEBUG)
    assert any("Traceback" in text for level, text in shown if level == logging.DEBUG)


def warn_on_the_worker(message: str) -> None:
    """A task: log `message` as a warning of the worker running it, as distributed's memory monitor does."""
    logging.getLogger("distributed.worker.memory").warning(message)


@pytest.mark.slow
def test_warnings_of_worker_processes_reach_the_client_once(caplog):
    logged = caplog.at_level(logging.WARNING, logger="pipeline")
    with logged, open_cluster(None, workers=2, device="cpu") as execution:
        client = execution.executor
        worker = next(iter(client.scheduler_info()["workers"]))
        for message in ("Worker is at 85% memory usage.", "Worker is at 85% memory usage.", "last"):
            client.submit(warn_on_the_worker, message, workers=[worker], pure=False).result()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("last" in r.getMessage() for r in caplog.records):
            time.sleep(0.1)
    shown = [r.getMessage() for r in caplog.records if r.name == "pipeline.cluster"]
    assert shown == [f"Dask worker {worker}: Worker is at 85% memory usage.", f"Dask worker {worker}: last"]


def test_a_missing_device_is_checked_here_only_for_workers_started_here(accelerators):
    accelerators(cuda=0, mps=False)
    for scheduler in (None, "threads", "sync"):
        with pytest.raises(UsageError, match="--device cuda"):
            check_local_device(scheduler, None, "cuda")
    check_local_device("tcp://10.0.0.5:8786", None, "cuda")  # the cluster's workers may have GPUs
    check_local_device(None, "scheduler.json", "cuda")
    with dask.config.set({"scheduler-address": "tcp://10.0.0.5:8786"}):  # DASK_SCHEDULER_ADDRESS
        check_local_device(None, None, "cuda")
