"""TorchScript-compiled SSIM / MS-SSIM: the same values as plain Python, a fallback, thread safety."""

from __future__ import annotations

import importlib
import logging
import os
import threading

import numpy as np
import pytest
import pytorch_msssim
import torch
from conftest import SSIM_TOL, degrade, real_image

from pipeline.metrics import compiled as compiled_module
from pipeline.metrics import ms_ssim, ssim, ssim_and_ms_ssim

ssim_module = importlib.import_module("pipeline.metrics.ssim")


def as_batch(images: list[np.ndarray], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (H, W[, 3]) arrays of one shape -> (N, C, H, W) float tensor."""
    planes = [torch.tensor(i if i.ndim == 3 else i[..., None]).permute(2, 0, 1) for i in images]
    return torch.stack(planes).to(dtype).contiguous()


@pytest.fixture
def plain_python(monkeypatch):
    """Run the metric functions uncompiled inside the `with` block this returns."""

    class Switch:
        def __enter__(self):
            monkeypatch.setattr(compiled_module, "USE_TORCHSCRIPT", False)

        def __exit__(self, *exc):
            monkeypatch.setattr(compiled_module, "USE_TORCHSCRIPT", True)

    return Switch()


PHOTOS = [
    ("astronaut.png", "jpeg"),  # 512 x 512 RGB
    ("camera.png", "blur"),  # 512 x 512 gray
    ("coffee.png", "noise"),  # 400 x 600 RGB
    ("chelsea.png", "bicubic2"),  # 300 x 451 RGB: odd width, padded pooling
]


@pytest.mark.parametrize(("name", "kind"), PHOTOS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_values_equal_plain_python_to_the_bit(name, kind, dtype, plain_python):
    reference = real_image(name)
    x, y = as_batch([reference], dtype), as_batch([degrade(reference, kind)], dtype)
    with torch.inference_mode():
        fast = ssim_and_ms_ssim(x, y, data_range=255)
        fast_ssim = ssim(x, y, data_range=255)
        with plain_python:
            slow = ssim_and_ms_ssim(x, y, data_range=255)
            slow_ssim = ssim(x, y, data_range=255)
    assert compiled_module._COMPILED[ssim_module._ms_ssim_levels] is not ssim_module._ms_ssim_levels
    torch.testing.assert_close(fast[0], slow[0], rtol=0, atol=0)
    torch.testing.assert_close(fast[1], slow[1], rtol=0, atol=0)
    torch.testing.assert_close(fast_ssim, slow_ssim, rtol=0, atol=0)
    expected = pytorch_msssim.ms_ssim(x.double(), y.double(), data_range=255, size_average=False)
    assert abs(fast[1].item() - expected.item()) < SSIM_TOL


def test_compiled_strips_and_batches_equal_plain_python(monkeypatch, plain_python):
    """Strips (a budget far below the image) and a batch of two, through the compiled loop."""
    reference = real_image("astronaut.png")
    x = as_batch([reference, reference])
    y = as_batch([degrade(reference, "noise"), degrade(reference, "jpeg")])
    monkeypatch.setattr(ssim_module, "CPU_STRIP_VALUES", 4 * 3 * 2 * 512 * 30)
    assert ssim_module._strip_rows(x, 11, ssim_module._strip_budget(x)) < 502
    with torch.no_grad():
        fast = ssim_and_ms_ssim(x, y, data_range=255)
        with plain_python:
            slow = ssim_and_ms_ssim(x, y, data_range=255)
    torch.testing.assert_close(fast[0], slow[0], rtol=0, atol=0)
    torch.testing.assert_close(fast[1], slow[1], rtol=0, atol=0)
    assert fast[1][0] != fast[1][1]


def test_gradients_take_the_plain_python_path():
    reference = real_image("camera.png")
    x = as_batch([reference])
    y = as_batch([degrade(reference, "blur")]).requires_grad_()
    loss = 1 - ms_ssim(x, y, data_range=255)
    loss.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def _doubled_plus_one(x: torch.Tensor) -> torch.Tensor:
    return x * 2 + 1


def _not_scriptable(x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) * 2)  # numpy inside: TorchScript cannot compile it


def test_compile_once_and_keep_the_callers_optimisation_flag():
    first = compiled_module.compiled(_doubled_plus_one)
    assert first is compiled_module.compiled(_doubled_plus_one)
    assert first is not _doubled_plus_one
    assert torch._C._get_graph_executor_optimize()
    assert first(torch.ones(3)).tolist() == [3.0, 3.0, 3.0]
    assert torch._C._get_graph_executor_optimize()


def test_a_function_torchscript_cannot_compile_runs_as_python(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.metrics.compiled"):
        run = compiled_module.compiled(_not_scriptable)
    assert run is _not_scriptable
    assert "_not_scriptable runs as plain Python" in caplog.text
    assert run(torch.ones(2)).tolist() == [2.0, 2.0]


def test_without_torchscript_the_metrics_still_run(monkeypatch, caplog):
    """A PyTorch without TorchScript: every function falls back, values unchanged."""

    def missing(*args, **kwargs):
        raise RuntimeError("TorchScript is not available in this build")

    reference = real_image("chelsea.png")
    x, y = as_batch([reference]), as_batch([degrade(reference, "jpeg")])
    with torch.inference_mode():
        expected = ssim_and_ms_ssim(x, y, data_range=255)
    monkeypatch.setattr(compiled_module, "_COMPILED", {})
    monkeypatch.setattr(torch.jit, "script", missing)
    with caplog.at_level(logging.INFO, logger="pipeline.metrics.compiled"), torch.inference_mode():
        values = ssim_and_ms_ssim(x, y, data_range=255)
    assert compiled_module._COMPILED[ssim_module._ms_ssim_levels] is ssim_module._ms_ssim_levels
    assert "TorchScript is not available" in caplog.text
    torch.testing.assert_close(values[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(values[1], expected[1], rtol=0, atol=0)


def test_threads_share_the_compiled_function():
    """Two threads compile on first use at once and score concurrently: each gets its own values."""
    images = [real_image("astronaut.png"), real_image("coffee.png")]
    pairs = [(as_batch([i]), as_batch([degrade(i, "noise", seed=3)])) for i in images]
    with torch.inference_mode():
        expected = [ssim_and_ms_ssim(x, y, data_range=255)[1].item() for x, y in pairs]
    results: dict[int, list[float]] = {}
    start = threading.Barrier(2)

    def score(index: int) -> None:
        x, y = pairs[index]
        start.wait()
        with torch.inference_mode():
            results[index] = [ssim_and_ms_ssim(x, y, data_range=255)[1].item() for _ in range(5)]

    compiled_module._COMPILED.pop(ssim_module._ms_ssim_levels, None)
    threads = [threading.Thread(target=score, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {0: [expected[0]] * 5, 1: [expected[1]] * 5}


def test_environment_variable_turns_compilation_off():
    import subprocess
    import sys

    code = "from pipeline.metrics import compiled as c\nprint(c.USE_TORCHSCRIPT)\n"
    for value, expected in (("0", "False"), ("1", "True"), ("", "True")):
        completed = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "IQA_TORCHSCRIPT": value},
            capture_output=True,
            text=True,
            check=True,
        )
        assert completed.stdout.split()[-1] == expected
