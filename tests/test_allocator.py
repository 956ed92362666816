"""glibc allocator and garbage-collector settings: applied only in processes that are this tool's own (the
worker processes it starts here; the `iqa` executable's: tests/test_cli.py), and nothing elsewhere."""

from __future__ import annotations

import gc
import platform

import pytest

from pipeline import allocator, worker
from pipeline.worker import ScoringPlugin


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_thresholds_are_set_on_glibc():
    assert allocator.glibc_mallopt() is not None
    assert allocator.keep_freed_memory() is True


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(allocator, "glibc_mallopt", lambda: None)
    assert allocator.keep_freed_memory() is False


@pytest.mark.parametrize("own_processes", [True, False])
def test_only_workers_of_processes_started_here_tune_the_allocator_and_collector(monkeypatch, own_processes):
    calls = []
    monkeypatch.setattr(worker, "keep_freed_memory", lambda: calls.append("tuned") or True)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("frozen"))
    ScoringPlugin(own_processes=own_processes).setup(worker=None)
    assert calls == (["tuned", "frozen"] if own_processes else [])


def test_freed_memory_goes_back_to_the_os_where_glibc_is_used(monkeypatch):
    assert allocator.return_freed_memory() is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setattr(allocator, "glibc_malloc_trim", lambda: None)
    assert allocator.return_freed_memory() is False
