"""The benchmark kit `scripts/bench/` and its scripts: start-up fit, datasets, target lines, child processes,
and the GPU check as a CPU smoke run."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def bench():
    """The package's modules, imported with scripts/ on sys.path as the scripts import them (kept there for
    the module's tests, which load scripts too)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        names = ("dataset", "pairs", "peers", "report", "suite", "timing")
        yield SimpleNamespace(**{name: importlib.import_module(f"bench.{name}") for name in names})
    finally:
        sys.path.remove(str(SCRIPTS))


def method(bench, name, fresh, scaled, started=1.0, pairs=60, scaled_pairs=300, metrics=None):
    return bench.timing.Method(
        name,
        metrics or bench.peers.PIXEL_METRICS,
        "2 procs x 1 thread",
        pairs,
        started=[started],
        fresh=fresh,
        scaled=scaled,
        scaled_pairs=scaled_pairs,
    )


def write_pairs(root: Path, keys: tuple[str, ...]) -> tuple[Path, Path]:
    ref, out = root / "ref", root / "out"
    pixels = np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)
    for key in keys:
        for folder, image in ((ref, pixels), (out, 255 - pixels)):
            (folder / key).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / key)
    return ref, out


def verdicts(lines: list[str]) -> dict[str, str]:
    """{label: '- PASS' / '- FAIL' / '- info' / '- not measured'} of target lines."""
    return {line.split(":")[1].strip(): line.split(":")[0] for line in lines if ":" in line}


def test_start_up_is_the_line_through_both_dataset_sizes(bench):
    # 2.5 s of start-up, then 120 pairs/s: 60 pairs in 3.0 s, 300 pairs in 5.0 s (medians of the repeats)
    row = method(bench, "x", fresh=[3.0, 2.9, 3.4], scaled=[5.0, 6.0, 4.9])
    start_up, rate = row.start_up()
    assert start_up == pytest.approx(2.5)
    assert rate == pytest.approx(120.0)
    assert row.rate("scaled") == pytest.approx(60.0)
    assert row.rate("fresh") == pytest.approx(20.0)
    assert np.isnan(bench.timing.Method("y", (), "", 10).rate("started"))
    noisy = method(bench, "iqa score", fresh=[3.0], scaled=[2.0])  # the larger run was faster: no line to fit
    lines = bench.report.information_lines(bench.report.Table(bench.peers.PIXEL_METRICS, noisy, [row]))
    assert (
        "iqa score (2 procs x 1 thread), fresh process: no fit (from the 60- and 300-pair runs)" in lines[0]
    )
    assert "x (2 procs x 1 thread), fresh process: 2.50 s of start-up, then 120.0 pairs/s" in lines[1]


def test_scaled_dataset_pairs_every_copy_like_the_original(bench, tmp_path):
    ref, out = write_pairs(tmp_path, ("a.png", "group/b.png"))
    scaled_ref, scaled_out = bench.dataset.scaled_dataset(ref, out, tmp_path / "x3", 3)
    pairs = bench.dataset.list_pairs(scaled_ref, scaled_out)
    assert sorted(p.key for p in pairs) == sorted(f"copy-{i}/{k}" for i in range(3) for k in ("a", "group/b"))
    assert (scaled_ref / "copy-2" / "group" / "b.png").read_bytes() == (ref / "group" / "b.png").read_bytes()


def test_photo_dataset_stops_after_the_photo_that_reaches_the_limit(bench, tmp_path):
    count = bench.dataset.build_square_dataset(tmp_path, 64, photos=1)
    pairs = bench.dataset.list_pairs(tmp_path / "reference", tmp_path / "output")
    assert count == len(pairs) == bench.dataset.PAIRS_PER_PHOTO
    assert "5 pairs, long side 64-64 px" in bench.dataset.describe_dataset(pairs)
    assert {p.key.split("/")[0] for p in pairs} == {"denoise", "sr_x2", "sr_x4", "jpeg_q20", "jpeg_q50"}


def test_pixel_target_is_judged_on_fresh_processes_over_the_scaled_dataset_only(bench):
    report = bench.report
    ours = method(bench, "iqa score", fresh=[3.0], scaled=[5.0], started=0.5)  # 60 pairs/s on 300 pairs
    peer = method(bench, "peer", fresh=[3.0], scaled=[16.0], started=2.0)  # 18.75 pairs/s: 3.2x
    decode = bench.timing.Method("decode", (), "2 procs", 60, started=[0.1], fresh=[0.5])
    judged = verdicts(report.target_lines(report.Table(bench.peers.PIXEL_METRICS, ours, [peer], decode)))
    assert judged["PSNR+SSIM+MS-SSIM vs the fastest peer loop, fresh process, 300 pairs"] == "- PASS"
    assert judged["PSNR+SSIM+MS-SSIM vs the fastest peer loop, started"] == "- info"
    assert judged["PSNR+SSIM+MS-SSIM vs the fastest peer loop, fresh process, 60 pairs"] == "- info"
    assert judged["PSNR+SSIM+MS-SSIM fraction of the decode bound, started"] == "- info"
    assert judged["PSNR+SSIM+MS-SSIM fraction of the decode bound, fresh process, 60 pairs"] == "- info"
    slow = method(bench, "peer", fresh=[3.0], scaled=[14.0], started=2.0)  # 21.4 pairs/s: 2.8x
    lines = report.target_lines(report.Table(bench.peers.PIXEL_METRICS, ours, [slow]))
    assert lines[0].startswith("- FAIL") and "300 pairs: 2.80 (target >= 3;" in lines[0]


def test_lpips_target_is_1_3_and_partial_peers_are_information(bench):
    report, lpips = bench.report, bench.peers.LPIPS_METRICS
    ours = method(bench, "iqa score", fresh=[3.0], scaled=[5.0], metrics=lpips)
    package = method(bench, "lpips", fresh=[3.0], scaled=[6.0], metrics=lpips)  # 1.2x
    lines = report.target_lines(report.Table(lpips, ours, [package]))
    assert lines[0].startswith("- FAIL: LPIPS-alex vs the fastest peer loop, fresh process, 300 pairs: 1.20")
    assert "target >= 1.3" in lines[0]
    partial = method(bench, "scikit-image", fresh=[3.0], scaled=[], metrics=("psnr", "ssim"))
    lines = report.target_lines(report.Table(bench.peers.PIXEL_METRICS, ours, [partial]))
    assert lines[0].startswith("- not measured: PSNR+SSIM+MS-SSIM vs the fastest peer loop")
    assert any(
        line.startswith("- info: vs scikit-image") and "computes only psnr+ssim" in line for line in lines
    )


def test_report_shows_each_peers_difference_from_our_values_and_saves_json(bench):
    report = bench.report
    ours = method(bench, "iqa score", fresh=[3.0], scaled=[5.0])
    peer = method(bench, "peer", fresh=[3.0], scaled=[16.0])
    ours.values = {"a": {"psnr": 30.0, "ssim": 0.9, "ms_ssim": 0.95}, "b": {"psnr": float("inf")}}
    peer.values = {"a": {"psnr": 30.5, "ssim": 0.9, "ms_ssim": 0.94}, "b": {"psnr": 99.0}}
    table = report.Table(bench.peers.PIXEL_METRICS, ours, [peer], skipped={"pyiqa": "not installed"})
    context = report.Context({"cores": 2, "cpu": "test cpu"}, (0.1, 0.2), "2 pairs", 1)
    text, record = report.render([table], context)
    assert "| iqa score | 2 procs x 1 thread |" in text and "| ref | ref | ref |" in text
    assert "| 5.0e-01 | 0.0e+00 | 1.0e-02 |" in text  # PSNR's inf pair left out
    assert "| pyiqa |" in text and "not installed" in text
    rows = json.loads(json.dumps(record))["tables"]["psnr,ssim,ms_ssim"]
    assert rows[1]["max_abs_difference"]["psnr"] == pytest.approx(0.5)
    assert record["targets"][0].startswith("- PASS") and record["dataset"] == "2 pairs"


def test_tables_group_peers_and_skips_by_metric_set(bench, tmp_path):
    suite, peers = bench.suite, bench.peers
    rows = [
        suite.PeerRow(
            name, layout, [], tmp_path, method(bench, name, [1.0], [], metrics=peers.PEERS[name].metrics)
        )
        for name in ("scikit-image", "lpips")
        for layout in (peers.SINGLE, peers.POOL)
    ]
    ours = {metrics: method(bench, "iqa score", [1.0], [], metrics=metrics) for metrics in suite.METRIC_SETS}
    decode = bench.timing.Method("decode", (), "2 procs", 60)
    methods = suite.Methods(rows, ours, decode, {"pyiqa": "missing", "lpips": "missing"})
    pixel, lpips = methods.tables()
    assert [row.name for row in pixel.peers] == ["scikit-image"] * 2 and pixel.decode is decode
    assert [row.name for row in lpips.peers] == ["lpips"] * 2 and lpips.decode is None
    assert list(pixel.skipped) == ["pyiqa"] and list(lpips.skipped) == ["lpips"]


def test_peers_are_chosen_by_name(bench):
    available, skipped = bench.peers.choose_peers("scikit-image,lpips")
    assert available == ["scikit-image", "lpips"] and skipped == {}
    with pytest.raises(SystemExit, match="unknown nope"):
        bench.peers.choose_peers("nope,lpips")


def test_pairs_travel_as_json_and_split_into_pool_chunks(bench, tmp_path):
    pairs = [bench.pairs.PairPaths(f"k{i}", f"r{i}", f"o{i}") for i in range(10)]
    assert bench.pairs.read_pairs(bench.pairs.write_pairs(tmp_path / "p.json", pairs)) == pairs
    parts = bench.pairs.pool_chunks(pairs, 2)
    assert [len(part) for part in parts] == [2, 2, 2, 2, 2]
    assert [pair for part in parts for pair in part] == pairs


def test_fresh_peer_and_decode_processes_run_to_completion(bench, tmp_path):
    ref, out = write_pairs(tmp_path, ("a.png",))
    pairs_file = bench.pairs.write_pairs(tmp_path / "pairs.json", bench.dataset.list_pairs(ref, out))
    env = bench.timing.process_env(1)
    for command in (
        bench.timing.peer_command("scikit-image", bench.peers.SINGLE, pairs_file, 1),
        bench.timing.decode_command(pairs_file, 1),
    ):
        bench.timing.run_child(command, env)
    with pytest.raises(SystemExit, match="failed"):
        bench.timing.run_child(bench.timing.peer_command("scikit-image", "single", tmp_path / "none", 1), env)


def test_peer_loop_scores_every_pair(bench, tmp_path):
    ref, out = write_pairs(tmp_path, ("a.png", "b.png"))
    values = bench.peers.run_peer("scikit-image", bench.dataset.list_pairs(ref, out))
    assert set(values) == {"a", "b"} and set(values["a"]) == {"psnr", "ssim"}


def test_score_command_is_the_cli_with_weights_only_for_lpips(bench, tmp_path):
    command = bench.timing.score_command(tmp_path, tmp_path, tmp_path / "run", ("psnr",), "w.pth")
    assert command[1:4] == ["-m", "pipeline", "score"] and "--lpips-weights" not in command
    command = bench.timing.score_command(tmp_path, tmp_path, tmp_path / "run", ("lpips",), "w.pth", workers=2)
    assert command[command.index("--lpips-weights") + 1] == "w.pth"
    assert command[command.index("--workers") + 1] == "2"


def test_driver_runs_as_a_script_next_to_its_package():
    completed = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), "--help"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "--fresh-scale" in completed.stdout and "--quick" in completed.stdout


def load_script(name: str):
    """A script of scripts/ as a module (the `bench` fixture keeps scripts/ on sys.path for its imports)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_gpu(bench):
    return load_script("bench_gpu")


def test_memory_check_prints_every_case_and_the_verdict(bench, capsys):
    assert load_script("bench_memory").main(["--size", "256"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "iqa score (default layout, 4 pairs)  psnr,ssim,ms_ssim,lpips,mse  peak RSS" in lines[0]
    assert sum("one task" in line for line in lines) == 5
    assert lines[-1].startswith(("PASS: whole `iqa score` run at 256x256 RGB", "FAIL: whole"))
    assert lines[-1].endswith("(target < 2048 MB)")


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
