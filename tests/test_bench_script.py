"""scripts/bench.py's bookkeeping: start-up fit of fresh processes, the scaled dataset, the target lines."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up while the script runs
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench", None)


def method(bench, name, fresh, scaled, started=1.0, pairs=60, scaled_pairs=300):
    return bench.Method(
        name,
        bench.PIXEL_METRICS,
        "2 procs x 1 thread",
        pairs,
        started=[started],
        fresh=fresh,
        scaled=scaled,
        scaled_pairs=scaled_pairs,
    )


def test_start_up_is_the_line_through_both_dataset_sizes(bench):
    # 2.5 s of start-up, then 120 pairs/s: 60 pairs in 3.0 s, 300 pairs in 5.0 s (medians of the repeats)
    row = method(bench, "x", fresh=[3.0, 2.9, 3.4], scaled=[5.0, 6.0, 4.9])
    start_up, rate = row.start_up()
    assert start_up == pytest.approx(2.5)
    assert rate == pytest.approx(120.0)
    assert row.rate("scaled") == pytest.approx(60.0)
    assert row.rate("fresh") == pytest.approx(20.0)


def test_scaled_dataset_pairs_every_copy_like_the_original(bench, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    pixels = np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)
    for key in ("a.png", "group/b.png"):
        for folder in (ref, out):
            (folder / key).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / key)
    scaled_ref, scaled_out = bench.scaled_dataset(ref, out, tmp_path / "x3", 3)
    pairs = bench.list_pairs(scaled_ref, scaled_out)
    assert sorted(p.key for p in pairs) == sorted(f"copy-{i}/{k}" for i in range(3) for k in ("a", "group/b"))
    assert (scaled_ref / "copy-2" / "group" / "b.png").read_bytes() == (ref / "group" / "b.png").read_bytes()


def test_fresh_targets_are_judged_on_the_scaled_dataset_only(bench):
    ours = method(bench, "iqa score", fresh=[3.0], scaled=[5.0], started=0.5)
    peer = method(bench, "peer", fresh=[3.0], scaled=[11.0], started=2.0)
    decode = bench.Method("decode", (), "2 procs", 60, started=[0.1], fresh=[0.5])
    lines = bench.target_lines(bench.PIXEL_METRICS, ours, [peer], decode)
    judged = {line.split(":")[1].strip(): line.split(":")[0] for line in lines if ":" in line}
    assert judged["PSNR+SSIM+MS-SSIM vs the fastest peer loop, started"] == "- PASS"  # 4x
    assert judged["PSNR+SSIM+MS-SSIM vs the fastest peer loop, fresh process, 300 pairs"] == "- PASS"  # 2.2x
    assert judged["PSNR+SSIM+MS-SSIM fraction of the decode bound, started"] == "- FAIL"  # 120 of 600 pairs/s
    assert judged["PSNR+SSIM+MS-SSIM vs the fastest peer loop, fresh process, 60 pairs"] == "- info"
    assert judged["PSNR+SSIM+MS-SSIM fraction of the decode bound, fresh process, 60 pairs"] == "- info"
    slow = method(bench, "peer", fresh=[3.0], scaled=[9.0], started=2.0)
    lines = bench.target_lines(bench.PIXEL_METRICS, ours, [slow], None)
    assert any(line.startswith("- FAIL") and "300 pairs: 1.80" in line for line in lines)


@pytest.fixture(scope="module")
def bench_gpu(bench):
    scripts = str(SCRIPT.parent)
    sys.path.insert(0, scripts)
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT.parent / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(scripts)


def test_gpu_check_runs_every_step_on_cpu(bench_gpu, capsys):
    """The GPU check (run when a task is lent one) as a CPU smoke run: every step prints, values equal."""
    arguments = ["--device", "cpu", "--photos", "1", "--pairs", "5", "--repeats", "1", "--batch", "1"]
    assert bench_gpu.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "5 pairs of 512 x 512 RGB" in printed
    assert (
        "1. max |difference| from CPU: psnr 0.0e+00, ssim 0.0e+00, ms_ssim 0.0e+00, lpips 0.0e+00" in printed
    )
    for step in (
        "2. LPIPS network only",
        "3. decode only",
        "4. iqa score --metrics lpips",
        "5. lpips package",
    ):
        assert step in printed


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message shown without CUDA")
def test_gpu_check_without_cuda_says_so(bench_gpu, capsys):
    assert bench_gpu.main([]) == 0
    assert "no CUDA device visible" in capsys.readouterr().out
