"""Dask cluster lifetime and bounded submission of tasks.

`open_cluster` owns the client: an embedded cluster by default, an existing scheduler by address or
scheduler file (or the address Dask is configured with, e.g. by `DASK_SCHEDULER_ADDRESS`, when neither is
given), `threads` (one in-process worker with threads) or `sync` (no Dask: tasks run one after another in
this process) for debugging. Warnings of workers in other processes are shown on this process's console
(`pipeline.worker_warnings`).

The embedded cluster on CPU runs one task thread per core, each with one torch thread: torch, Pillow and
hashlib release the GIL during their work, so up to `THREADS_PER_PROCESS` task threads share one worker, and
on machines with that many cores or fewer the worker lives in this process (no worker process has to start
and import torch again). With CUDA there is one worker process per GPU, pinned with `CUDA_VISIBLE_DEVICES`;
with Apple's MPS (one device) one worker in this process.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.system
import torch
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster, WorkerPlugin, as_completed

from pipeline import __version__
from pipeline.choices import Device
from pipeline.devices import device_kind
from pipeline.errors import ClusterError, UsageError
from pipeline.worker_warnings import forward_worker_warnings

log = logging.getLogger("pipeline.cluster")

CONNECT_TIMEOUT_S = 10
ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"  # sets Dask's `scheduler-address` config
THREADS_PER_PROCESS = 4
LOCAL = (None, "threads", "sync")  # scheduler values that start no connection
# Dask settings for the clusters started here: no sampling profiler (its 10 ms samples take the GIL from
# in-process task threads), slower admin ticks, and short developer logs: the scheduler keeps the last
# `low-level-log-length` messages sent to each worker (Dask's default 1,000), and each holds a shard's tasks,
# so the default kept tens of MB of paths in this process on runs of 100,000s of pairs.
EMBEDDED_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.low-level-log-length": 100,
}


@dataclass
class ClusterPlan:
    """How many workers, with how many task threads and torch threads each, and whether they hold GPUs
    (`gpus` CUDA devices, or Apple's MPS).

    `processes=False` means one worker inside this process.
    """

    workers: int
    torch_threads: int
    gpus: int = 0
    threads_per_worker: int = 1
    processes: bool = True
    mps: bool = False

    def describe(self) -> str:
        if not self.processes:
            return (
                f"local cluster: 1 in-process worker x {self.threads_per_worker} thread(s) "
                f"x {self.torch_threads} torch thread(s)" + (", Apple MPS" if self.mps else "")
            )
        threads = f" x {self.threads_per_worker} thread(s)" if self.threads_per_worker > 1 else ""
        gpus = f", {self.gpus} GPU(s), one per worker" if self.gpus else ""
        return (
            f"local cluster: {self.workers} worker process(es){threads} x {self.torch_threads} "
            f"torch thread(s){gpus}"
        )


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, and a container's CPU limit (cgroup quota)."""
    return dask.system.cpu_count()


def cuda_device_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_local_cluster(workers: int | None, threads: int | None, device: str) -> ClusterPlan:
    """Size a local cluster so that task threads x torch threads never exceed the cores.

    The device is `devices.device_kind(device)`'s. With CUDA: one single-threaded worker process per GPU. With
    MPS (one device): one single-threaded worker in this process, decoding with the torch threads (all
    cores) as on a GPU. `workers` given: that many single-threaded worker processes sharing the cores' torch
    threads. Otherwise one task thread per `threads` cores (default 1), grouped into worker processes of at
    most `THREADS_PER_PROCESS` threads, or a single in-process worker when they fit in one.

    Raises:
        UsageError: `cuda` or `mps` was asked for and is not available here.
    """
    cores = available_cores()
    kind = device_kind(device)
    if kind == Device.CUDA:
        gpus = cuda_device_count()
        n_workers = workers or gpus
        return ClusterPlan(n_workers, threads or max(1, cores // n_workers), gpus=min(gpus, n_workers))
    if kind == Device.MPS and not workers:
        return ClusterPlan(1, threads or cores, processes=False, mps=True)
    if workers:
        return ClusterPlan(workers, threads or max(1, cores // workers))
    torch_threads = threads or 1
    task_threads = max(1, cores // torch_threads)
    n_workers = math.ceil(task_threads / THREADS_PER_PROCESS)
    return ClusterPlan(
        n_workers, torch_threads, threads_per_worker=task_threads // n_workers, processes=n_workers > 1
    )


def check_local_device(scheduler: str | None, scheduler_file: str | None, device: str) -> None:
    """Fail early when the workers run on this machine (an embedded cluster, `threads` or `sync`) and the
    device asked for is not here; an existing cluster's workers may have devices this machine lacks.

    Raises:
        UsageError: `cuda` or `mps` was asked for and is not available here.
    """
    configured = scheduler is None and configured_scheduler() is not None  # DASK_SCHEDULER_ADDRESS
    if scheduler_file is None and scheduler in LOCAL and not configured:
        device_kind(device)


class SyncExecutor:
    """Runs each submitted call at once in this process (`--scheduler sync`, for debugging)."""

    def submit(self, fn: Callable, *args: Any, **_: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future


@dataclass
class Execution:
    """An open executor and what a run records about it."""

    executor: Client | SyncExecutor
    torch_threads: int | None
    description: str
    dashboard_link: str | None = None
    own_processes: bool = False  # the workers are processes this run started
    started_here: bool = False  # a local cluster of this run: its workers see this machine's files
    plugins: list[str] = field(default_factory=list)

    @property
    def has_workers(self) -> bool:
        """Tasks run on Dask workers (which get per-run state through worker plugins), not in this thread."""
        return isinstance(self.executor, Client)

    @property
    def task_threads(self) -> int:
        """Tasks that run at once: the sum of the workers' threads (1 for the sync executor)."""
        if isinstance(self.executor, SyncExecutor):
            return 1
        workers = self.executor.scheduler_info().get("workers", {})
        return max(1, sum(int(info.get("nthreads", 1)) for info in workers.values()))

    def register(self, plugin: WorkerPlugin) -> None:
        """Install a worker plugin on every worker, now and joining later, until the run ends (nothing for
        the sync executor).

        Raises:
            ClusterError: a worker cannot set the plugin up (e.g. iqa-pipeline is not installed there).
        """
        if not isinstance(self.executor, Client):
            return
        try:
            self.executor.register_plugin(plugin)
        except Exception as exc:
            raise ClusterError(
                f"The Dask workers cannot set up iqa-pipeline's worker plugin {plugin.name!r} "
                f"({type(exc).__name__}: {exc}); install iqa-pipeline {__version__} (the version of this "
                "machine) on every worker, with the same Python, Dask and torch (docs/clusters.md)."
            ) from exc
        self.plugins.append(plugin.name)

    def unregister(self) -> None:
        """Remove the plugins this run installed (their teardown runs on each worker)."""
        for name in self.plugins:
            with suppress(OSError, TimeoutError):  # a cluster that is gone has nothing to remove
                self.executor.unregister_worker_plugin(name)
        self.plugins.clear()


@contextmanager
def open_cluster(
    scheduler: str | None = None,
    *,
    scheduler_file: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    device: str = Device.AUTO,
    log_level: int = logging.WARNING,
) -> Iterator[Execution]:
    """Yield an Execution, closing what it started on exit.

    Args:
        scheduler: None for an embedded cluster, 'threads', 'sync', or an address 'tcp://host:8786'.
        scheduler_file: a Dask scheduler file of an existing cluster.
        workers, threads: local cluster size; not allowed with an existing cluster.
        device: 'auto', 'cpu', 'cuda' or 'mps' (decides GPU workers for the local cluster).
        log_level: the level of the Dask loggers in the clusters started here.

    Raises:
        UsageError: local sizes given for an existing cluster, or CUDA or MPS asked for and absent.
        ClusterError: the cluster cannot be started or reached.
    """
    source = None
    if scheduler is None and scheduler_file is None and (configured := configured_scheduler()):
        scheduler, source = configured
    remote = scheduler_file is not None or scheduler not in LOCAL
    if remote and (workers is not None or threads is not None):
        raise UsageError(_local_sizes_message(scheduler, source))
    if scheduler == "sync":
        yield Execution(SyncExecutor(), None, "in-process (sync)")
        return
    if remote:
        if source:
            log.warning(
                "Using the Dask scheduler %s from %s (unset it to start a local cluster).", scheduler, source
            )
        client = _connect(scheduler, scheduler_file)
        description = f"Dask cluster {scheduler_file or scheduler}" + (f" (from {source})" if source else "")
        execution = Execution(client, remote_torch_threads(client), description, client.dashboard_link)
        try:
            execution.register(forward_worker_warnings(client, scheduler_events=True, quiet_stderr=False))
            yield execution
        finally:
            execution.unregister()
            client.close()
        return
    cluster, torch_threads, description, processes = _start_local(
        scheduler, workers, threads, device, log_level
    )
    with dask.config.set(EMBEDDED_CLUSTER_CONFIG):
        client = Client(cluster)
    try:
        execution = Execution(
            client,
            torch_threads,
            description,
            local_dashboard_link(client),
            own_processes=processes,
            started_here=True,
        )
        if processes:  # an in-process worker logs here itself
            execution.register(forward_worker_warnings(client, scheduler_events=False, quiet_stderr=True))
        yield execution
    finally:
        client.close()
        cluster.close()


def configured_scheduler() -> tuple[str, str] | None:
    """The scheduler address Dask is configured with (`scheduler-address`, which `DASK_SCHEDULER_ADDRESS`
    sets) and where it was set; None when it is not.

    Example:
        >>> with dask.config.set({"scheduler-address": "tcp://10.0.0.5:8786"}):
        ...     configured_scheduler()
        ('tcp://10.0.0.5:8786', "Dask's config (scheduler-address)")
    """
    address = dask.config.get("scheduler-address", None)
    if not address:
        return None
    address = str(address)
    if os.environ.get(ADDRESS_VARIABLE) == address:
        return address, ADDRESS_VARIABLE
    return address, "Dask's config (scheduler-address)"


def _local_sizes_message(scheduler: str | None, source: str | None) -> str:
    """Why --workers/--threads cannot be used with an existing cluster, and what to do instead."""
    if source:
        return (
            f"--workers and --threads size the embedded local cluster, but {source} names the Dask scheduler "
            f"{scheduler}: unset it to start a local cluster, or leave out --workers and --threads to use "
            "that cluster (size it where it is started)."
        )
    return (
        "--workers and --threads size the embedded local cluster; they cannot be used with "
        "--scheduler ADDRESS or --scheduler-file (size that cluster where it is started)."
    )


def _start_local(
    scheduler: str | None, workers: int | None, threads: int | None, device: str, log_level: int
) -> tuple[Any, int, str, bool]:
    """(cluster, torch threads per task, description, whether its workers are processes of their own)."""
    if scheduler == "threads":
        count = workers or available_cores()
        options = {"processes": False, "n_workers": 1, "threads_per_worker": count}
        return _start_local_cluster(options, log_level), 1, f"local threads ({count})", False
    plan = plan_local_cluster(workers, threads, device)
    if plan.gpus:
        envs = [{"CUDA_VISIBLE_DEVICES": str(i % plan.gpus)} for i in range(plan.workers)]
        return start_pinned_cluster(envs, log_level), plan.torch_threads, plan.describe(), True
    options = {
        "n_workers": plan.workers,
        "threads_per_worker": plan.threads_per_worker,
        "processes": plan.processes,
    }
    return _start_local_cluster(options, log_level), plan.torch_threads, plan.describe(), plan.processes


def local_dashboard_link(client: Client) -> str | None:
    """The dashboard of a cluster started here, which listens on 127.0.0.1 only (Dask's own link names the
    machine's address, which an in-process scheduler's dashboard does not listen on)."""
    port = client.scheduler_info().get("services", {}).get("dashboard")
    return f"http://127.0.0.1:{port}/status" if port else None


def remote_torch_threads(client: Client) -> int:
    """Torch threads per task on an existing cluster: each host's cores shared by its worker threads, so
    that workers x threads x torch threads never exceed a host's cores (the smallest share over hosts)."""
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        return 1
    cores = client.run(available_cores)
    task_threads: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for address, info in workers.items():
        host = info.get("host", address)
        task_threads[host] = task_threads.get(host, 0) + int(info.get("nthreads", 1))
        host_cores[host] = cores.get(address, 1)
    return max(1, min(host_cores[host] // task_threads[host] for host in task_threads))


def _start_local_cluster(kwargs: dict[str, Any], log_level: int) -> LocalCluster:
    where = {"host": "127.0.0.1"} if kwargs.get("processes", True) else {}
    try:
        with dask.config.set(EMBEDDED_CLUSTER_CONFIG):
            return LocalCluster(dashboard_address="127.0.0.1:0", silence_logs=log_level, **where, **kwargs)
    except Exception as exc:
        raise ClusterError(f"Could not start a local Dask cluster ({exc}). Try --scheduler sync.") from exc


def start_pinned_cluster(worker_envs: list[dict[str, str]], log_level: int = logging.WARNING) -> SpecCluster:
    """A local cluster with one single-threaded worker process per entry of `worker_envs`, each started with
    that environment (e.g. `CUDA_VISIBLE_DEVICES` to pin one GPU per worker, as dask-cuda does)."""
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}
    workers = {
        f"worker-{index}": {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1", "env": env}}
        for index, env in enumerate(worker_envs)
    }
    try:
        with dask.config.set(EMBEDDED_CLUSTER_CONFIG):
            return SpecCluster(scheduler=scheduler, workers=workers, silence_logs=log_level)
    except Exception as exc:
        raise ClusterError(f"Could not start a local Dask cluster ({exc}). Try --scheduler sync.") from exc


def _connect(scheduler: str | None, scheduler_file: str | None) -> Client:
    where = scheduler_file or scheduler
    try:
        if scheduler_file:
            return Client(scheduler_file=scheduler_file, timeout=CONNECT_TIMEOUT_S)
        return Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"Cannot reach the Dask scheduler at {where} within {CONNECT_TIMEOUT_S} s ({exc}). "
            "Check the address and that the scheduler is running."
        ) from exc


def run_bounded(
    executor: Client | SyncExecutor, fn: Callable, items: Iterable[Any], *args: Any, max_in_flight: int
) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Submit `fn(item, *args)` with at most `max_in_flight` items outstanding.

    Yields:
        (item, result, None) for each finished item, or (item, None, exception) when it raised.
    """
    items = iter(items)
    if isinstance(executor, SyncExecutor):
        for item in items:
            yield item, *_outcome(executor.submit(fn, item, *args))
        return
    pending: dict[Any, Any] = {}
    completed = as_completed()

    def submit_next() -> bool:
        item = next(items, None)
        if item is None:
            return False
        future = executor.submit(fn, item, *args, pure=False)
        pending[future.key] = item
        completed.add(future)
        return True

    for _ in range(max(1, max_in_flight)):
        if not submit_next():
            break
    for future in completed:
        item = pending.pop(future.key)
        result, error = _outcome(future)
        future.release()
        submit_next()
        yield item, result, error


def _outcome(future: Any) -> tuple[Any, BaseException | None]:
    try:
        return future.result(), None
    except Exception as exc:
        return None, exc
