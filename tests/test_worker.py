"""pipeline/worker.py: per-process state shared by task threads, the worker plugin, decode prefetch, the
value budget for large pairs, and `score_shard`'s rows against independent implementations on real photos."""

from __future__ import annotations

import importlib
import math
import threading
import time

import lpips as lpips_package
import numpy as np
import pytest
import torch
from conftest import LPIPS_TOL, PSNR_TOL, SSIM_TOL, degrade, matlab_y, real_image, save_image, skimage_ssim
from distributed import LocalCluster
from PIL import Image
from scipy.signal import convolve2d
from skimage.metrics import peak_signal_noise_ratio

from pipeline import worker
from pipeline.cluster import open_cluster
from pipeline.devices import compute_device, resolve_device
from pipeline.errors import UsageError, WeightsError
from pipeline.measure import prepare_plugins
from pipeline.metrics.lpips_weights import load_backbone_weights, verify_backbone
from pipeline.worker import (
    PairTask,
    ScoringPlugin,
    ShardSettings,
    WorkerState,
    current_state,
    decode_threads,
    prefetch,
    score_shard,
    scoring_plugin,
)

PIXEL_METRICS = ("psnr", "ssim", "ms_ssim", "mse")


def test_lpips_network_is_built_once_for_concurrent_threads(monkeypatch):
    calls = []

    def slow_build(*args, **kwargs):
        calls.append(args)
        time.sleep(0.2)
        return torch.nn.Identity()

    monkeypatch.setattr(worker, "build_lpips_network", slow_build)
    state = WorkerState()
    networks = []

    def build() -> None:
        networks.append(state.resources("alex", "w.pth").lpips_network(torch.device("cpu")))

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(networks) == 4 and all(network is networks[0] for network in networks)


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_prefetch_yields_every_item_in_order(threads):
    assert list(prefetch(lambda item: item * 2, range(7), threads)) == [0, 2, 4, 6, 8, 10, 12]


def test_prefetch_threads_work_at_once_and_stay_bounded():
    """Three threads decode three items at the same time (a barrier of three would time out otherwise),
    and no more than three results are ever computed ahead of the consumer."""
    barrier = threading.Barrier(3, timeout=10)
    lock = threading.Lock()
    ahead, most_ahead = [0], [0]

    def decode(item):
        if item < 3:
            barrier.wait()
        with lock:
            ahead[0] += 1
            most_ahead[0] = max(most_ahead[0], ahead[0])
        return item

    results = []
    for item in prefetch(decode, range(12), 3):
        time.sleep(0.01)  # a slow consumer: the threads run ahead as far as they may
        with lock:
            ahead[0] -= 1
        results.append(item)
    assert results == list(range(12))
    assert most_ahead[0] <= 4  # three ahead of the consumer, plus the one it holds


def test_prefetch_ahead_follows_what_was_decoded():
    """With `ahead_after`, one item is decoded before any result is known, then as many ahead as the last
    result allows: three while results are small, one once they are large."""
    lock = threading.Lock()
    started, ahead_seen = [0], {}

    def decode(item):
        with lock:
            started[0] += 1
        time.sleep(0.03 if item == 0 else 0.005)
        if item == 0:
            with lock:
                assert started[0] == 1  # nothing else was decoded before the first size was known
        return item

    decoded = prefetch(decode, range(16), 3, ahead_after=lambda r: 1 if r >= 6 else 3)
    for consumed, item in enumerate(decoded, start=1):
        time.sleep(0.02)
        with lock:
            ahead_seen[item] = started[0] - consumed
    assert list(ahead_seen) == list(range(16))
    assert max(ahead_seen[i] for i in range(6)) <= 3
    assert max(ahead_seen[i] for i in range(10, 16)) <= 1  # the three queued before item 6 were drained
    assert max(ahead_seen[i] for i in range(1, 5)) == 3  # small items do run three ahead


def test_pairs_ahead_keeps_decoded_values_bounded():
    from types import SimpleNamespace

    from pipeline.worker import DECODED_AHEAD_VALUES, LoadedPair, pairs_ahead

    def pair(height, width, channels=3):
        image = SimpleNamespace(size=height * width * channels)
        return LoadedPair({}, aligned=SimpleNamespace(ref=image, out=image))

    assert pairs_ahead(pair(512, 512), 8) == 8
    assert pairs_ahead(pair(512, 512), 2) == 2
    assert pairs_ahead(pair(2040, 1356), 8) == 1
    assert pairs_ahead(pair(4096, 4096), 8) == 1
    assert pairs_ahead(pair(1024, 1024), 8) == DECODED_AHEAD_VALUES // (2 * 1024 * 1024 * 3) == 5
    assert pairs_ahead(LoadedPair({}), 8) is None  # an error row says nothing about sizes


def test_prefetch_passes_an_exception_to_the_consumer_in_order():
    def decode(item):
        if item == 2:
            raise ValueError("broken file")
        return item

    seen = []
    with pytest.raises(ValueError, match="broken file"):
        for item in prefetch(decode, range(6), 3):
            seen.append(item)
    assert seen == [0, 1]


def test_plugin_sets_the_workers_torch_threads_and_puts_them_back():
    """An in-process worker shares the caller's process: its thread count is restored when it closes."""
    before = torch.get_num_threads()
    plugin = ScoringPlugin(torch_threads=1)
    try:
        plugin.setup(worker=None)
        assert torch.get_num_threads() == 1
        assert isinstance(plugin.state, WorkerState)
        plugin.teardown(worker=None)
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_tasks_outside_a_worker_use_the_process_state():
    assert worker.current_state() is worker._LOCAL_STATE


def test_shipped_weights_are_used_only_for_the_backbone_they_came_from(checkpoint_store, tmp_path):
    backbone = verify_backbone("squeeze", checkpoint_store / "squeeze-seed0.pth")
    other = verify_backbone("alex", checkpoint_store / "alex-seed0.pth")
    state = WorkerState(shipped=load_backbone_weights("squeeze", backbone))
    assert state.weights_source("squeeze", backbone) is state.shipped
    assert state.weights_source("alex", other) is other
    assert state.weights_source("squeeze", "squeeze.pth") == "squeeze.pth"


def test_the_plugin_ships_the_backbone_to_dask_workers_only(checkpoint_store):
    backbone = verify_backbone("squeeze", checkpoint_store / "squeeze-seed0.pth")
    with open_cluster("sync") as execution:
        assert scoring_plugin(execution, "squeeze", backbone).backbone is None
    with open_cluster("threads", workers=1) as execution:
        execution.register(scoring_plugin(execution, "squeeze", backbone))
        shipped = execution.executor.submit(lambda: current_state().shipped).result()
        assert shipped.file == backbone and shipped.net == "squeeze"


def test_the_plugin_ships_adapted_metrics_weights_to_another_cluster_only(seeded_pyiqa_lpips):
    """Whole weights files go only to workers that may not see this machine's files: not to the sync
    executor, not to a local cluster the run starts, and to a cluster found at an address."""
    setups = prepare_plugins(("psnr", "pyiqa_lpips", "pyiqa_gmsd"))  # GMSD loads no weights: nothing to ship
    with open_cluster("sync") as execution:
        assert scoring_plugin(execution, "alex", None, plugin_setups=setups).plugins == {}
    with open_cluster("threads", workers=1) as execution:
        assert scoring_plugin(execution, "alex", None, plugin_setups=setups).plugins == {}
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        open_cluster(cluster.scheduler_address) as execution,
    ):
        execution.register(scoring_plugin(execution, "alex", None, plugin_setups=setups))
        shipped = execution.executor.submit(lambda: current_state().shipped_plugins).result()
    assert list(shipped) == ["pyiqa_lpips"]
    assert tuple(item.file for item in shipped["pyiqa_lpips"]) == setups["pyiqa_lpips"]
    sizes = {item.file.name: len(item.data) for item in shipped["pyiqa_lpips"]}
    assert sizes == {path.name: path.stat().st_size for path in seeded_pyiqa_lpips}


def test_a_worker_that_cannot_build_the_network_says_which_worker(tmp_path):
    missing = str(tmp_path / "missing-alexnet.pth")

    def build() -> None:
        WorkerState().resources("alex", missing).lpips_network(torch.device("cpu"))

    with open_cluster("threads", workers=1) as execution:
        address = next(iter(execution.executor.scheduler_info()["workers"]))
        with pytest.raises(WeightsError) as info:
            execution.executor.submit(build).result()
    message = str(info.value)
    assert message.startswith(f"On Dask worker {address}: LPIPS weights path") and missing in message
    with pytest.raises(WeightsError, match=r"^LPIPS weights path"):
        build()


def test_decode_threads_per_device(monkeypatch):
    """Single-threaded CPU tasks decode inline, multi-threaded ones in one thread; a GPU worker (CUDA or
    MPS) decodes in one thread per torch thread (its cores), at most GPU_DECODE_THREADS."""
    cuda, mps = torch.device("cuda", 0), torch.device("mps")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert decode_threads(torch.device("cpu")) == 0
    assert decode_threads(cuda) == decode_threads(mps) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert decode_threads(torch.device("cpu")) == 1
    assert decode_threads(cuda) == decode_threads(mps) == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert decode_threads(cuda) == decode_threads(mps) == worker.GPU_DECODE_THREADS == 8


@pytest.mark.parametrize(
    ("cuda", "mps", "requested", "expected"),
    [
        (2, True, "auto", "cuda:0"),  # CUDA first
        (0, True, "auto", "mps"),  # then Apple's MPS
        (0, False, "auto", "cpu"),  # else the CPU
        (2, True, "cpu", "cpu"),
        (2, True, "mps", "mps"),  # asked for, MPS even where CUDA is present
        (1, False, "cuda", "cuda:0"),
    ],
)
def test_auto_takes_cuda_then_mps_then_cpu(accelerators, cuda, mps, requested, expected):
    accelerators(cuda=cuda, mps=mps)
    assert resolve_device(requested) == torch.device(expected)


@pytest.mark.parametrize(("requested", "name"), [("cuda", "CUDA"), ("mps", "Apple MPS")])
def test_an_accelerator_asked_for_and_absent_is_a_usage_error(accelerators, requested, name):
    accelerators(cuda=0, mps=requested == "cuda")  # the other one is present
    with pytest.raises(UsageError, match=f"--device {requested} was asked for, but no {name} device"):
        resolve_device(requested)


def test_float64_work_of_an_mps_worker_runs_on_the_cpu():
    mps, cuda = torch.device("mps"), torch.device("cuda", 0)
    assert compute_device(mps, torch.float64) == torch.device("cpu")
    assert compute_device(mps, torch.float32) == mps
    assert compute_device(cuda, torch.float64) == cuda


def test_float32_sums_as_on_mps_keep_every_metric_within_tolerance(monkeypatch, tmp_path, alex_weights):
    """MPS has no float64, so its sums accumulate in float32: on the CPU with float32 sums, 512 px photos
    score within DESIGN.md's tolerances of the float64 sums (MSE in strips of rows, as on larger images)."""
    modules = [importlib.import_module(f"pipeline.metrics.{name}") for name in ("psnr", "ssim", "perceptual")]
    monkeypatch.setattr(modules[0], "STRIP_VALUES", 100_000)
    tasks = []
    for index, name in enumerate(("astronaut.png", "coffee.png", "camera.png")):
        reference = real_image(name)[:512, :512]
        ref_path = save_image(tmp_path / f"r{index}.png", reference)
        out_path = save_image(tmp_path / f"o{index}.png", degrade(reference, "jpeg"))
        tasks.append(PairTask(f"k{index}", "", ref_path, out_path))
    settings = ShardSettings(
        metrics=(*PIXEL_METRICS, "lpips"), lpips_weights=str(alex_weights), device="cpu", ms_ssim_scales=5
    )
    exact = score_shard(tasks, settings).rows
    for module in modules:
        monkeypatch.setattr(module, "accumulation_dtype", lambda device: torch.float32)
    summed_in_float32 = score_shard(tasks, settings).rows
    pairs = list(zip(exact, summed_in_float32, strict=True))
    for metric in ("ssim", "ms_ssim"):  # summed in float32 (8-bit MSE sums stay exact, LPIPS ends in float32)
        assert any(getattr(a, metric) != getattr(b, metric) for a, b in pairs), metric
    for a, b in pairs:
        assert a.ok and b.ok, (a.error, b.error)
        assert abs(a.psnr - b.psnr) < PSNR_TOL and abs(a.lpips - b.lpips) < LPIPS_TOL
        assert abs(a.ssim - b.ssim) < SSIM_TOL and abs(a.ms_ssim - b.ms_ssim) < SSIM_TOL


def test_value_budget_lets_large_batches_score_one_at_a_time():
    budget = worker.ValueBudget(100)
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


def test_header_values_read_the_size_without_decoding(tmp_path):
    import numpy as np
    from PIL import Image

    from pipeline.images import header_values, read_image_file

    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "gray.jpg")
    Image.fromarray(np.zeros((30, 40, 4), np.uint8)).save(tmp_path / "rgba.png")
    np.save(tmp_path / "array.npy", np.zeros((30, 40)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    values = {path.name: header_values(read_image_file(path)) for path in tmp_path.iterdir()}
    assert values == {
        "rgb.png": 3600, "gray.jpg": 1200, "rgba.png": 3600, "array.npy": None, "broken.png": None,
    }  # fmt: skip


@pytest.fixture
def one_torch_thread():
    """Tasks as a CPU worker runs them: one torch thread, so pairs are decoded inline."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _large_pair_folders(tmp_path, count: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    tasks = []
    for index in range(count):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        noisy = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        ref, out = tmp_path / f"ref{index}.png", tmp_path / f"out{index}.png"
        Image.fromarray(image).save(ref)
        Image.fromarray(noisy).save(out)
        tasks.append(worker.PairTask(f"k{index}", "", str(ref), str(out)))
    return tasks


def test_large_pairs_are_decoded_only_when_their_values_fit(tmp_path, monkeypatch, one_torch_thread):
    """Two task threads, pairs of 12288 values per image, a budget of 20000: a pair is decoded only after the
    other thread's pair is scored, so at most one large decoded pair is alive; rows equal inline scoring."""
    tasks = _large_pair_folders(tmp_path, 6)
    settings = ShardSettings(metrics=("psnr", "ssim"), device="cpu")
    expected = [row.psnr for row in worker.score_shard(tasks, settings).rows]
    monkeypatch.setattr(worker, "LARGE_PAIR_VALUES", 1)
    monkeypatch.setattr(worker, "CPU_BATCH_VALUES", 1)
    monkeypatch.setattr(worker, "_LOCAL_STATE", WorkerState(budget=worker.ValueBudget(20_000)))
    live, most = [0], [0]
    lock = threading.Lock()
    decode, score = worker.decode_image, worker._score_batch

    def counting_decode(image_file, **kwargs):
        if "/ref" in image_file.path:
            with lock:
                live[0] += 1
                most[0] = max(most[0], live[0])
            time.sleep(0.02)
        return decode(image_file, **kwargs)

    def counting_score(batch, *args):
        try:
            return score(batch, *args)
        finally:
            with lock:
                live[0] -= len(batch)

    monkeypatch.setattr(worker, "decode_image", counting_decode)
    monkeypatch.setattr(worker, "_score_batch", counting_score)
    rows: dict[int, list] = {}
    threads = [
        threading.Thread(
            target=lambda part=part: rows.update({part: worker.score_shard(tasks[part::2], settings).rows})
        )
        for part in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert most[0] == 1
    assert worker._LOCAL_STATE.budget.used == 0
    got = [None] * len(tasks)
    for part, part_rows in rows.items():
        got[part::2] = [row.psnr for row in part_rows]
    assert got == expected


def test_a_pair_that_fails_after_reserving_gives_its_values_back(tmp_path, monkeypatch, one_torch_thread):
    tasks = _large_pair_folders(tmp_path, 2)
    (tmp_path / "out0.png").write_bytes((tmp_path / "out0.png").read_bytes()[:200])  # truncated
    monkeypatch.setattr(worker, "LARGE_PAIR_VALUES", 1)
    monkeypatch.setattr(worker, "_LOCAL_STATE", WorkerState(budget=worker.ValueBudget(10**9)))
    rows = worker.score_shard(tasks, ShardSettings(metrics=("psnr",), device="cpu")).rows
    assert [row.status for row in rows] == ["error", "ok"]
    assert "out0.png" in rows[0].error
    assert worker._LOCAL_STATE.budget.used == 0


# Scoring one pair: the values against independent implementations (BasicSR's formulas written out with
# numpy and scipy, scikit-image, the lpips package; DESIGN.md section 6).


def basicsr_prepare(image: np.ndarray, crop: int) -> np.ndarray:
    image = image[crop:-crop, crop:-crop] if crop else image
    return matlab_y(image) if image.ndim == 3 else image.astype(np.float64)


def basicsr_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 20.0 * math.log10(255.0 / math.sqrt(mse))


def basicsr_ssim(a: np.ndarray, b: np.ndarray) -> float:
    coords = np.arange(11) - 5
    taps = np.exp(-(coords**2) / (2 * 1.5**2))
    window = np.outer(taps, taps) / np.outer(taps, taps).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filt(x):
        return convolve2d(x, window, mode="valid")

    mu1, mu2 = filt(a), filt(b)
    s1, s2, s12 = filt(a * a) - mu1**2, filt(b * b) - mu2**2, filt(a * b) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def score_arrays(tmp_path, reference, output, **settings):
    ref_path, out_path = save_image(tmp_path / "ref.png", reference), save_image(tmp_path / "out.png", output)
    task = PairTask("k", "", ref_path, out_path)
    metrics = settings.pop("metrics", PIXEL_METRICS)
    (row,) = score_shard([task], ShardSettings(metrics=metrics, **settings)).rows
    return row


@pytest.mark.parametrize(
    ("name", "kind", "scale"),
    [
        ("astronaut.png", "bicubic4", 4),
        ("coffee.png", "bicubic2", 2),
        ("chelsea.png", "jpeg", 3),
        ("camera.png", "bicubic4", 4),
        ("motorcycle_left.png", "noise", 4),
    ],
)
def test_sr_paper_matches_basicsr_formulas(tmp_path, name, kind, scale):
    reference = real_image(name)
    output = degrade(reference, kind)
    row = score_arrays(
        tmp_path, reference, output, convention="sr-paper", crop=scale, metrics=("psnr", "ssim")
    )
    a, b = basicsr_prepare(reference, scale), basicsr_prepare(output, scale)
    assert row.status == "ok", row.error
    assert abs(row.psnr - basicsr_psnr(a, b)) < PSNR_TOL
    assert abs(row.ssim - basicsr_ssim(a, b)) < SSIM_TOL


def test_sr_paper_gray_rgb_mix_is_replicated_then_converted(tmp_path):
    reference = real_image("astronaut.png")
    gray_output = np.asarray(Image.fromarray(degrade(reference, "blur")).convert("L"))
    row = score_arrays(
        tmp_path, reference, gray_output, convention="sr-paper", crop=4, metrics=("psnr", "ssim")
    )
    replicated = np.repeat(gray_output[..., None], 3, axis=2)
    a, b = basicsr_prepare(reference, 4), basicsr_prepare(replicated, 4)
    assert abs(row.psnr - basicsr_psnr(a, b)) < PSNR_TOL
    assert abs(row.ssim - basicsr_ssim(a, b)) < SSIM_TOL
    assert any("replicated" in w for w in row.warnings)


@pytest.mark.parametrize("name", ["astronaut.png", "camera.png", "chelsea.png"])
def test_default_convention_matches_skimage(tmp_path, name):
    reference = real_image(name)
    output = degrade(reference, "jpeg")
    row = score_arrays(tmp_path, reference, output)
    expected_ssim = skimage_ssim(reference, output, 255)
    assert abs(row.ssim - expected_ssim) < SSIM_TOL
    assert abs(row.psnr - peak_signal_noise_ratio(reference, output, data_range=255)) < PSNR_TOL
    assert row.bit_depth == 8 and row.channels == (3 if reference.ndim == 3 else 1)


def test_identical_pair_has_infinite_psnr(tmp_path):
    reference = real_image("coffee.png")
    row = score_arrays(tmp_path, reference, reference)
    assert row.psnr == float("inf") and row.mse == 0.0
    assert row.ssim == pytest.approx(1.0) and row.ms_ssim == pytest.approx(1.0)


def test_small_images_leave_structural_metrics_null_with_reason(tmp_path):
    tiny = real_image("camera.png")[:8, :8]
    row = score_arrays(tmp_path, tiny, tiny[::-1].copy())
    assert row.status == "ok" and row.psnr is not None
    assert row.ssim is None and row.ms_ssim is None
    assert any("11 px" in w for w in row.warnings)
    medium = real_image("camera.png")[:100, :150]
    row = score_arrays(tmp_path, medium, degrade(medium, "noise"))
    assert row.ssim is not None and row.ms_ssim is None
    assert any("ms_ssim left null" in w and "161" in w for w in row.warnings)


def test_constant_images_give_no_nan(tmp_path):
    flat = np.full((64, 64), 7, np.uint8)
    row = score_arrays(tmp_path, flat, np.full((64, 64), 9, np.uint8))
    assert all(np.isfinite(getattr(row, m)) for m in ("psnr", "ssim", "mse"))


def test_sixteen_bit_pair_uses_65535(tmp_path):
    reference = real_image("camera.png").astype(np.uint16) * 257 + 3
    output = (degrade(real_image("camera.png"), "blur").astype(np.uint16) * 257).astype(np.uint16)
    row = score_arrays(tmp_path, reference, output)
    assert row.bit_depth == 16
    assert abs(row.psnr - peak_signal_noise_ratio(reference, output, data_range=65535)) < PSNR_TOL


def test_lpips_through_the_pipeline_equals_lpips_package(tmp_path, alex_home, alex_weights):
    reference = real_image("astronaut.png")[:256, :256]
    output = degrade(reference, "jpeg")
    row = score_arrays(
        tmp_path, reference, output, metrics=("lpips",), lpips_weights=str(alex_weights), device="cpu"
    )
    network = lpips_package.LPIPS(net="alex", verbose=False).eval()

    def scaled(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1

    expected = network(scaled(reference), scaled(output)).item()
    assert abs(row.lpips - expected) < 1e-5
