"""Dask cluster lifetime and bounded submission of shards.

`open_executor` owns the client: an embedded `LocalCluster` by default, an existing scheduler by address or
scheduler file, `threads` (one in-process worker with threads) or `sync` (no Dask, the shards run one after
another in this process) for debugging.

The embedded cluster on CPU runs one task thread per core, each with one torch thread. Torch, Pillow and
hashlib release the GIL for their work (SSIM's many small tensor operations run compiled for that reason,
`pipeline.metrics.compiled`), so up to `THREADS_PER_PROCESS` task threads share one worker; on
machines with that many cores or fewer the worker lives in this process, which saves starting worker
processes that each import torch again (about 2.5 s before the first pair on 2 cores). With CUDA there is one
worker process per GPU, pinned with `CUDA_VISIBLE_DEVICES`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ClusterError, UsageError

log = logging.getLogger("pipeline.cluster")

CONNECT_TIMEOUT_S = 10
THREADS_PER_PROCESS = 4
# Dask settings for the clusters this module starts. By default their workers sample the stacks of their
# task threads every 10 ms for the dashboard's profile page, and every server wakes its event loop every
# 20 ms to time it and every 0.5 s to record system metrics. In an in-process worker each of these takes the
# GIL from the scoring threads: on 2 cores, a run of 60 pairs used 5% more CPU time with Dask's defaults
# than with these settings, 3% with only the sampling off.
EMBEDDED_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}


@dataclass
class ClusterPlan:
    """How many workers, with how many task threads and torch threads each, and whether they hold GPUs.

    `processes=False` means one worker inside this process.
    """

    workers: int
    torch_threads: int
    gpus: int = 0
    threads_per_worker: int = 1
    processes: bool = True

    def describe(self) -> str:
        if not self.processes:
            return (
                f"local cluster: 1 in-process worker x {self.threads_per_worker} thread(s) "
                f"x {self.torch_threads} torch thread(s)"
            )
        threads = f" x {self.threads_per_worker} thread(s)" if self.threads_per_worker > 1 else ""
        gpus = f", {self.gpus} GPU(s), one per worker" if self.gpus else ""
        return (
            f"local cluster: {self.workers} worker process(es){threads} x {self.torch_threads} "
            f"torch thread(s){gpus}"
        )


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_local_cluster(workers: int | None, threads: int | None, device: str) -> ClusterPlan:
    """Size a local cluster so that task threads x torch threads never exceed the cores.

    With CUDA: one single-threaded worker process per GPU. `workers` given: that many single-threaded worker
    processes sharing the cores' torch threads. Otherwise one task thread per `threads` cores (default 1),
    grouped into worker processes of at most `THREADS_PER_PROCESS` threads, or a single in-process worker
    when they fit in one.
    """
    cores = available_cores()
    gpus = cuda_device_count() if device in ("auto", "cuda") else 0
    if device == "cuda" and gpus == 0:
        raise UsageError(
            "--device cuda was asked for, but no CUDA device is visible. Use --device cpu or auto."
        )
    if gpus:
        n_workers = workers or gpus
        return ClusterPlan(n_workers, threads or max(1, cores // n_workers), gpus=min(gpus, n_workers))
    if workers:
        return ClusterPlan(workers, threads or max(1, cores // workers))
    torch_threads = threads or 1
    task_threads = max(1, cores // torch_threads)
    n_workers = math.ceil(task_threads / THREADS_PER_PROCESS)
    return ClusterPlan(
        n_workers,
        torch_threads,
        threads_per_worker=task_threads // n_workers,
        processes=n_workers > 1,
    )


@dataclass
class Execution:
    """An open executor and what the run records about it."""

    executor: Any
    torch_threads: int | None
    description: str
    dashboard_link: str | None = None

    @property
    def worker_count(self) -> int:
        """Tasks that run at once: the sum of the workers' threads (1 for the sync executor)."""
        if isinstance(self.executor, SyncExecutor):
            return 1
        workers = self.executor.scheduler_info().get("workers", {})
        return max(1, sum(int(info.get("nthreads", 1)) for info in workers.values()))


class SyncExecutor:
    """Runs each submitted call at once in this process (for `--scheduler sync` and debugging)."""

    def submit(self, fn: Callable, *args: Any, **_: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        pass


@contextmanager
def open_executor(
    scheduler: str | None = None,
    *,
    scheduler_file: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    device: str = "auto",
) -> Iterator[Execution]:
    """Yield an Execution around a `distributed.Client` (or a SyncExecutor), closing what it started on exit.

    Args:
        scheduler: None for an embedded LocalCluster, 'threads', 'sync', or an address 'tcp://host:8786'.
        scheduler_file: a Dask scheduler file of an existing cluster.
        workers, threads: local cluster size; not allowed with an existing cluster.
        device: 'auto', 'cpu' or 'cuda' (decides GPU workers for the local cluster).
    """
    remote = scheduler_file or (scheduler and scheduler not in ("threads", "sync"))
    if remote and (workers is not None or threads is not None):
        raise UsageError(
            "--workers and --threads size the embedded local cluster; they cannot be used with "
            "--scheduler ADDRESS or --scheduler-file (size that cluster where it is started)."
        )
    if scheduler == "sync":
        yield Execution(SyncExecutor(), threads or available_cores(), "in-process (sync)")
        return
    quiet_dask_logs()
    if not remote:
        yield from _local_execution(scheduler, workers, threads, device)
        return
    client = _connect(scheduler, scheduler_file)
    try:
        yield Execution(
            client,
            remote_torch_threads(client),
            f"Dask cluster {scheduler_file or scheduler}",
            client.dashboard_link,
        )
    finally:
        client.close()


def _local_execution(
    scheduler: str | None, workers: int | None, threads: int | None, device: str
) -> Iterator[Execution]:
    from distributed import Client

    if scheduler == "threads":
        threads_per_worker = workers or available_cores()
        cluster = _start_local_cluster(
            {"processes": False, "n_workers": 1, "threads_per_worker": threads_per_worker}
        )
        torch_threads = 1
        description = f"local threads ({threads_per_worker})"
    else:
        plan = plan_local_cluster(workers, threads, device)
        if plan.gpus:
            cluster = start_pinned_cluster(
                [{"CUDA_VISIBLE_DEVICES": str(i % plan.gpus)} for i in range(plan.workers)]
            )
        else:
            cluster = _start_local_cluster(
                {
                    "n_workers": plan.workers,
                    "threads_per_worker": plan.threads_per_worker,
                    "processes": plan.processes,
                }
            )
        torch_threads = plan.torch_threads
        description = plan.describe()
    client = Client(cluster)
    log.info("Dask dashboard: %s", client.dashboard_link)
    try:
        yield Execution(client, torch_threads, description, client.dashboard_link)
    finally:
        client.close()
        cluster.close()


def remote_torch_threads(client: Any) -> int:
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


def quiet_dask_logs(level: int = logging.ERROR) -> None:
    """Keep Dask's INFO chatter (scheduler and workers starting and closing) off the console; warnings and
    errors still show. distributed sets its loggers up when it is first imported, so import it first."""
    import distributed  # noqa: F401

    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(level)


def _start_local_cluster(kwargs: dict[str, Any]):
    import dask
    from distributed import LocalCluster

    try:
        where = {"host": "127.0.0.1"} if kwargs.get("processes", True) else {}
        with dask.config.set(EMBEDDED_CLUSTER_CONFIG):
            return LocalCluster(
                dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR, **where, **kwargs
            )
    except Exception as exc:
        raise ClusterError(f"Could not start a local Dask cluster ({exc}). Try --scheduler sync.") from exc


def start_pinned_cluster(worker_envs: list[dict[str, str]]):
    """A local cluster with one single-threaded worker process per entry of `worker_envs`, each started with
    that environment (e.g. `CUDA_VISIBLE_DEVICES` to pin one GPU per worker, as dask-cuda does)."""
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}
    workers = {
        f"worker-{index}": {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1", "env": env}}
        for index, env in enumerate(worker_envs)
    }
    try:
        with dask.config.set(EMBEDDED_CLUSTER_CONFIG):
            return SpecCluster(scheduler=scheduler, workers=workers, silence_logs=logging.ERROR)
    except Exception as exc:
        raise ClusterError(f"Could not start a local Dask cluster ({exc}). Try --scheduler sync.") from exc


def _connect(scheduler: str | None, scheduler_file: str | None):
    from distributed import Client

    where = scheduler_file or scheduler
    try:
        if scheduler_file:
            client = Client(scheduler_file=scheduler_file, timeout=CONNECT_TIMEOUT_S)
        else:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"Cannot reach the Dask scheduler at {where} within {CONNECT_TIMEOUT_S} s ({exc}). "
            "Check the address and that the scheduler is running."
        ) from exc
    log.info("Connected to Dask scheduler %s (dashboard: %s)", where, client.dashboard_link)
    return client


def run_bounded(
    executor: Any, fn: Callable, shards: Iterable[Any], *args: Any, max_in_flight: int
) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Submit `fn(shard, *args)` with at most `max_in_flight` shards outstanding.

    Yields:
        (shard, result, None) for each finished shard, or (shard, None, exception) when it raised.
    """
    shards = iter(shards)
    if isinstance(executor, SyncExecutor):
        for shard in shards:
            future = executor.submit(fn, shard, *args)
            yield shard, *_outcome(future)
        return
    from distributed import as_completed

    pending: dict[Any, Any] = {}
    completed = as_completed()

    def submit_next() -> bool:
        shard = next(shards, None)
        if shard is None:
            return False
        future = executor.submit(fn, shard, *args, pure=False)
        pending[future.key] = shard
        completed.add(future)
        return True

    for _ in range(max(1, max_in_flight)):
        if not submit_next():
            break
    for future in completed:
        shard = pending.pop(future.key)
        result, error = _outcome(future)
        future.release()
        submit_next()
        yield shard, result, error


def _outcome(future: Any) -> tuple[Any, BaseException | None]:
    try:
        return future.result(), None
    except Exception as exc:
        return None, exc
