"""Worker-side machinery: per-process state shared by task threads, decode prefetch, allocator tuning."""

from __future__ import annotations

import platform
import threading
import time

import pytest
import torch

from pipeline import compute
from pipeline.allocator import keep_freed_memory
from pipeline.compute import ScoreSettings, WorkerState, prefetch, prefetch_depth


def test_lpips_network_is_built_once_for_concurrent_threads(monkeypatch):
    calls = []

    def slow_build(*args, **kwargs):
        calls.append(args)
        time.sleep(0.2)
        return torch.nn.Identity()

    monkeypatch.setattr("pipeline.metrics.perceptual.build_lpips_network", slow_build)
    state, settings = WorkerState(), ScoreSettings(metrics=("lpips",), lpips_weights="w.pth")
    networks = []
    threads = [
        threading.Thread(target=lambda: networks.append(state.lpips_network(settings, torch.device("cpu"))))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(networks) == 4 and all(network is networks[0] for network in networks)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_yields_every_item_in_order(depth):
    assert list(prefetch(lambda item: item * 2, range(7), depth)) == [0, 2, 4, 6, 8, 10, 12]


def test_single_threaded_cpu_tasks_decode_inline(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert prefetch_depth(torch.device("cpu")) == 0
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert prefetch_depth(torch.device("cpu")) == compute.PREFETCH_DEPTH
    assert prefetch_depth(torch.device("cuda", 0)) == compute.PREFETCH_DEPTH


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
def test_allocator_thresholds_are_set_on_glibc():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


def test_value_budget_lets_large_batches_score_one_at_a_time():
    from pipeline.compute import ValueBudget

    budget = ValueBudget(100)
    order: list[str] = []
    first_holds = threading.Event()

    def first() -> None:
        with budget.hold(60):
            first_holds.set()
            time.sleep(0.2)
            order.append("first done")

    def second() -> None:
        first_holds.wait()
        with budget.hold(60):
            order.append("second scoring")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert order == ["first done", "second scoring"]
    with budget.hold(500):
        assert budget.used == 100
    assert budget.used == 0
