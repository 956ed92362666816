"""Warnings of Dask workers on the client's console: memory, restarts, lost workers.

Messages of processes other than the client reach it as Dask events:

* each worker process forwards the records of its `distributed.worker` loggers (`distributed.worker.memory`
  among them) at WARNING and above, with distributed's `ForwardLoggingPlugin`;
* the scheduler of an existing cluster reports a worker its nanny restarted for using too much memory
  (topic `worker-restart-memory`) and a worker that left unexpectedly (topic `all`, action `remove-worker`).

`WorkerWarnings` logs each as one line naming the worker on the `pipeline.cluster` logger, and shows a message
once per worker (messages that differ only in their numbers count as one). `Client.forward_logging` itself is
not used: it hands the records to the client's `distributed` loggers, whose lines name no worker.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from dask.utils import format_bytes
from distributed import Client
from distributed.diagnostics.plugin import ForwardLoggingPlugin

log = logging.getLogger("pipeline.cluster")

FORWARDED_LOGGER = "distributed.worker"  # and the loggers below it
MEMORY_RESTART_TOPIC = "worker-restart-memory"  # the nanny's event when it restarts a worker for its memory
CLUSTER_TOPIC = "all"  # the scheduler's events about the cluster, among them `remove-worker`


class WorkerWarnings:
    """Turns Dask events into log lines `Dask worker ADDRESS: message`, each message once per worker."""

    def __init__(self) -> None:
        self._shown: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def show(self, worker: str, level: int, message: str) -> None:
        """Log `message` of `worker` at `level`, unless one differing only in its numbers was shown."""
        kind = (worker, re.sub(r"\d+", "N", message))
        with self._lock:
            if kind in self._shown:
                return
            self._shown.add(kind)
        log.log(level, "Dask worker %s: %s", worker, message)

    def on_record(self, event: tuple[float, dict[str, Any]]) -> None:
        """A log record forwarded by `ForwardLoggingPlugin` (its message already formatted): its first line is
        shown; a traceback after it (e.g. a heartbeat that failed while the cluster closed) is logged at
        DEBUG only, so that the console never shows one."""
        _, record = event
        worker, message = str(record.get("worker", "?")), str(record["msg"])
        headline = message.split("\n", 1)[0].rstrip()
        if headline != message:
            log.debug("Dask worker %s: %s", worker, message)
        self.show(worker, int(record.get("levelno", logging.WARNING)), headline)

    def on_memory_restart(self, event: tuple[float, dict[str, Any]]) -> None:
        """The nanny's `worker-restart-memory` event."""
        _, details = event
        used = format_bytes(details.get("rss", 0))
        self.show(
            str(details.get("worker", "?")),
            logging.WARNING,
            f"its process (pid {details.get('pid')}) used {used}, more than its memory limit allows, and its "
            "nanny restarted it; its tasks run again. Give the workers more memory (dask worker "
            "--memory-limit) or fewer threads each (--nthreads).",
        )

    def on_cluster_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """The scheduler's events about the cluster: a worker that left without being asked to is shown."""
        _, details = event
        unexpected = isinstance(details, dict) and details.get("action") == "remove-worker"
        if not unexpected or details.get("expected"):
            return
        running = len(details.get("processing-tasks") or ())
        self.show(
            str(details.get("worker", "?")),
            logging.WARNING,
            f"left the cluster unexpectedly with {running} task(s) running; they run again on other workers "
            "(the worker's own log says why it stopped).",
        )


class ForwardWorkerWarnings(ForwardLoggingPlugin):
    """Forwards a worker's `distributed.worker` records at WARNING and above to the client's topic.

    `quiet_stderr`: the worker is a process this run started, whose stderr is the client's: its own
    `distributed` stream handlers leave the forwarded records out, so that each shows once.
    """

    def __init__(self, topic: str, quiet_stderr: bool = False) -> None:
        super().__init__(FORWARDED_LOGGER, logging.WARNING, topic)
        self.name = topic
        self.quiet_stderr = quiet_stderr
        self._not_forwarded = _NotForwarded()

    def setup(self, worker: Any) -> None:
        super().setup(worker)
        if self.quiet_stderr:
            for handler in _stream_handlers():
                handler.addFilter(self._not_forwarded)

    def teardown(self, worker: Any) -> None:
        super().teardown(worker)
        for handler in _stream_handlers():
            handler.removeFilter(self._not_forwarded)


class _NotForwarded(logging.Filter):
    """Lets through the records that `ForwardWorkerWarnings` does not forward."""

    def filter(self, record: logging.LogRecord) -> bool:
        forwarded = record.name == FORWARDED_LOGGER or record.name.startswith(FORWARDED_LOGGER + ".")
        return not (forwarded and record.levelno >= logging.WARNING)


def _stream_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger("distributed").handlers if isinstance(h, logging.StreamHandler)]


def forward_worker_warnings(
    client: Client, *, scheduler_events: bool, quiet_stderr: bool
) -> ForwardWorkerWarnings:
    """Show the warnings of the workers of `client`'s cluster on this process's `pipeline.cluster` logger.

    Args:
        client: connected to a cluster whose workers run in other processes.
        scheduler_events: also show memory restarts and lost workers reported by the scheduler (for a
            scheduler in another process; one in this process logs them here itself).
        quiet_stderr: the workers are processes started here, sharing this process's stderr.

    Returns:
        The worker plugin to register on the cluster (`Execution.register`), which starts the forwarding.
    """
    warnings = WorkerWarnings()
    topic = f"iqa-worker-warnings-{client.id}"
    client.subscribe_topic(topic, warnings.on_record)
    if scheduler_events:
        client.subscribe_topic(MEMORY_RESTART_TOPIC, warnings.on_memory_restart)
        client.subscribe_topic(CLUSTER_TOPIC, warnings.on_cluster_event)
    return ForwardWorkerWarnings(topic, quiet_stderr=quiet_stderr)
