"""Winograd convolution: exact transforms, equality with `F.conv2d`, bounded float32 error, chunking, and
LPIPS through it against the `lpips` package on real photos (seeded AlexNet backbone, no network access).
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lpips as lpips_package
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import degrade, real_image

from pipeline.metrics import perceptual, winograd
from pipeline.metrics.perceptual import build_lpips_network, lpips
from pipeline.metrics.winograd import WinogradConv2d, supports, winograd_transform

TILINGS = [(2, 3), (4, 3), (6, 3), (2, 5), (3, 5), (4, 5)]
SHAPES = [  # (N, Cin, Cout, H, W)
    (1, 3, 5, 1, 1),
    (2, 3, 5, 2, 3),
    (1, 4, 6, 7, 9),
    (2, 3, 5, 33, 31),
    (1, 64, 192, 9, 10),
]
EPS32 = torch.finfo(torch.float32).eps
# Winograd rounds like a direct convolution whose terms are amplified by the transforms' norms (Lavin & Gray
# 2016; Barabasz et al., "Error analysis and improving the accuracy of Winograd convolution", 2020):
# elementwise |error| <= c * eps * (|w| * |x| + |b|). Measured on random data, c <= 30 for F(4x4, 3x3) and
# F(4x4, 5x5) (oneDNN's direct convolution: c <= 3); 128 leaves room for other data, while any wrong
# coefficient, tile or bias gives errors of order 1 / eps larger.
FLOAT32_FACTOR = 128
LPIPS_TOLERANCE = 1e-6
DEGRADATION_KINDS = ("blur", "noise", "jpeg")


def conv_layer(
    k: int, cin: int, cout: int, *, bias: bool = True, seed: int = 0, **options
) -> torch.nn.Conv2d:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(cin, cout, k, padding=options.pop("padding", k // 2), bias=bias, **options)


def random_input(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# Transform matrices


@pytest.mark.parametrize(("m", "r"), TILINGS)
def test_transform_reproduces_1d_correlation(m: int, r: int) -> None:
    transform = winograd_transform(m, r)
    generator = torch.Generator().manual_seed(m * 10 + r)
    for _ in range(5):
        d = torch.randn(m + r - 1, dtype=torch.float64, generator=generator)
        g = torch.randn(r, dtype=torch.float64, generator=generator)
        expected = torch.stack([(g * d[k : k + r]).sum() for k in range(m)])
        torch.testing.assert_close(transform.correlate(d, g), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("m", "r"), TILINGS)
def test_transform_reproduces_2d_correlation(m: int, r: int) -> None:
    transform = winograd_transform(m, r)
    alpha = transform.alpha
    generator = torch.Generator().manual_seed(m * 10 + r)
    d = torch.randn(alpha, alpha, dtype=torch.float64, generator=generator)
    g = torch.randn(r, r, dtype=torch.float64, generator=generator)
    a, b, gm = transform.inverse, transform.data, transform.filter
    got = a @ ((gm @ g @ gm.T) * (b @ d @ b.T)) @ a.T
    expected = F.conv2d(d[None, None], g[None, None])[0, 0]
    assert got.shape == (m, m)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-11)


@pytest.mark.parametrize(("m", "r"), TILINGS)
def test_transform_shapes_and_bias_point(m: int, r: int) -> None:
    transform = winograd_transform(m, r)
    alpha = m + r - 1
    assert transform.data.shape == (alpha, alpha)
    assert transform.filter.shape == (alpha, r)
    assert transform.inverse.shape == (m, alpha)
    assert all(t.dtype == torch.float64 for t in (transform.data, transform.filter, transform.inverse))
    ones = transform.inverse[:, winograd.FINITE_POINTS.index(1.0)]
    torch.testing.assert_close(ones, torch.ones(m, dtype=torch.float64), rtol=0, atol=0)


def test_too_many_points_are_refused() -> None:
    with pytest.raises(ValueError, match="finite points"):
        winograd_transform(8, 5)


# The prepared convolution


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False])
def test_float64_equals_conv2d(k: int, shape: tuple[int, ...], bias: bool) -> None:
    n, cin, cout, h, w = shape
    conv = conv_layer(k, cin, cout, bias=bias).double()
    x = random_input((n, cin, h, w)).double()
    prepared = WinogradConv2d.from_conv(conv)
    with torch.no_grad():
        expected = conv(x)
        got = prepared(x)
        got_relu = prepared(x, relu=True)
    assert got.shape == (n, cout, h, w)
    assert got.is_contiguous(memory_format=torch.channels_last)
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(got_relu, expected.clamp_min(0), rtol=0, atol=1e-10 * scale)


def float32_bound(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """FLOAT32_FACTOR * eps * (|w| * |x| + |b|), elementwise, in float64."""
    bias = None if conv.bias is None else conv.bias.double().abs()
    magnitude = F.conv2d(x.double().abs(), conv.weight.double().abs(), bias, padding=conv.padding)
    return FLOAT32_FACTOR * EPS32 * magnitude


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_float32_error_is_bounded(k: int, shape: tuple[int, ...], layout: str) -> None:
    n, cin, cout, h, w = shape
    conv = conv_layer(k, cin, cout)
    x = random_input((n, cin, h, w)).relu() * 3
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = WinogradConv2d.from_conv(conv)(x)
        expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=k // 2)
    assert got.dtype == torch.float32
    error = (got.double() - expected).abs()
    assert (error <= float32_bound(conv, x)).all(), f"max error {error.max().item():.3g}"


def test_fallback_products_equal_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = conv_layer(3, 24, 40)
    x = random_input((2, 24, 13, 17))
    with torch.no_grad():
        onednn = WinogradConv2d.from_conv(conv)(x)
        monkeypatch.setattr(winograd, "_onednn_runs", lambda tensor: False)
        fallback = WinogradConv2d.from_conv(conv)(x)
    torch.testing.assert_close(fallback, onednn, rtol=1e-5, atol=1e-5)


def test_wrong_input_is_rejected() -> None:
    prepared = WinogradConv2d.from_conv(conv_layer(3, 4, 8))
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        prepared(torch.rand(1, 5, 8, 8))
    with pytest.raises(ValueError, match="float64"):
        prepared(torch.rand(1, 4, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="no gradients"):
        prepared(torch.rand(1, 4, 8, 8, requires_grad=True))
    with torch.no_grad():
        prepared(torch.rand(1, 4, 8, 8, requires_grad=True))


# What is supported


@pytest.mark.parametrize(
    "options",
    [
        {"stride": 2},
        {"dilation": 2, "padding": 2},
        {"groups": 2},
        {"padding": 0},
        {"padding": 2},
        {"padding": (1, 0)},
        {"padding": "same"},
        {"padding_mode": "reflect"},
    ],
    ids=str,
)
def test_unsupported_geometry_is_rejected(options: dict) -> None:
    conv = conv_layer(3, 4, 8, **options)
    assert not supports(conv)
    with pytest.raises(ValueError, match="Winograd needs"):
        WinogradConv2d.from_conv(conv)


@pytest.mark.parametrize("kernel", [1, 7, (3, 5)])
def test_other_kernels_are_rejected(kernel: int | tuple[int, int]) -> None:
    padding = (kernel[0] // 2, kernel[1] // 2) if isinstance(kernel, tuple) else kernel // 2
    conv = torch.nn.Conv2d(4, 8, kernel, padding=padding)
    assert not supports(conv)


def test_supported_layers_and_dtypes() -> None:
    assert supports(conv_layer(3, 4, 8))
    assert supports(conv_layer(5, 4, 8, bias=False))
    assert not supports(conv_layer(3, 4, 8).double())
    assert not supports(conv_layer(3, 4, 8).half())
    assert not supports(torch.nn.Conv1d(4, 8, 3, padding=1))
    WinogradConv2d.from_conv(conv_layer(3, 4, 8).double())
    with pytest.raises(ValueError, match="float32/float64"):
        WinogradConv2d.from_conv(conv_layer(3, 4, 8).half())


def test_it_pays_off_for_the_alexnet_trunk_only_where_measured() -> None:
    convs = [m for m in torchvision.models.alexnet(weights=None).features if isinstance(m, torch.nn.Conv2d)]
    assert [supports(c) and winograd.pays_off(c) for c in convs] == [False, True, True, True, True]
    assert not winograd.pays_off(conv_layer(3, 64, 64))


# Chunks of tiles


@pytest.mark.parametrize(
    ("batch", "rows", "cols", "limit"),
    [(1, 1, 1, 1), (3, 8, 8, 64), (3, 8, 8, 200), (2, 16, 16, 80), (1, 5, 40, 7), (2, 7, 3, 4), (4, 2, 2, 9)],
)
def test_chunks_cover_every_tile_once_within_the_limit(batch: int, rows: int, cols: int, limit: int) -> None:
    seen = np.zeros((batch, rows, cols), dtype=int)
    for chunk in winograd._chunks(batch, rows, cols, limit):
        assert 1 <= chunk.tiles <= limit
        seen[
            chunk.image : chunk.image + chunk.images,
            chunk.row : chunk.row + chunk.rows,
            chunk.col : chunk.col + chunk.cols,
        ] += 1
    assert (seen == 1).all()


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_equals_unchunked(k: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    conv = conv_layer(k, 6, 10).to(dtype)
    x = random_input((2, 6, 23, 29)).to(dtype)
    prepared = WinogradConv2d.from_conv(conv)
    with torch.no_grad():
        whole = prepared(x, relu=True)
        calls = []
        products = prepared._products
        monkeypatch.setattr(prepared, "_products", lambda v: calls.append(v.shape[0]) or products(v))
        monkeypatch.setattr(winograd, "CHUNK_VALUES", 3 * prepared.points * 10)
        chunked = prepared(x, relu=True)
    m = prepared.transform.output
    assert max(calls) <= 3
    assert sum(calls) == 2 * -(-23 // m) * -(-29 // m)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(chunked, whole, rtol=0, atol=tolerance * whole.abs().max().item())


def test_packed_weights_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = WinogradConv2d.from_conv(conv_layer(3, 8, 8))
    with torch.no_grad():
        for side in range(4, 40, 4):
            prepared(random_input((1, 8, side, side)))
    assert 1 <= len(prepared._packed) <= winograd.PACKED_SHAPES
    assert set(prepared._packed) <= {winograd.packing_shape(t) for t in range(1, 4096)}


def test_packings_are_shared_within_a_bucket() -> None:
    assert [winograd.packing_shape(t) for t in (1, 2, 3, 7, 8, 33, 63, 64, 85, 4096)] == [
        1, 2, 2, 4, 8, 32, 32, 64, 64, 64,
    ]  # fmt: skip
    assert len({winograd.packing_shape(t) for t in range(1, 10_000)}) == 7
    prepared = WinogradConv2d.from_conv(conv_layer(3, 8, 8))
    if not winograd._onednn_runs(torch.rand(1)):
        pytest.skip("no oneDNN operators in this PyTorch build")
    with torch.no_grad():
        for tiles in (64, 70, 128, 40, 33):
            prepared._packed_weight(tiles)
        assert list(prepared._packed) == [64, 32]
        for tiles in (17, 9, 100):
            prepared._packed_weight(tiles)
    assert list(prepared._packed) == [16, 8, 64][-winograd.PACKED_SHAPES :]


def test_broken_onednn_operators_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oneDNN operators are internal to PyTorch: one that fails or computes something else is not used."""
    conv = conv_layer(3, 24, 40)
    x = random_input((1, 24, 9, 11))
    expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)

    def wrong(grid, packed, bias, groups):
        return torch.zeros(1, 1, 1, 1)

    for broken in (wrong, lambda *args: (_ for _ in ()).throw(RuntimeError("changed signature"))):
        winograd._onednn_operators.cache_clear()
        monkeypatch.setattr(winograd, "_pointwise", broken)
        assert not winograd._onednn_operators()
        with torch.no_grad():
            got = WinogradConv2d.from_conv(conv)(x)
        torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-4)
    monkeypatch.undo()
    winograd._onednn_operators.cache_clear()
    assert winograd._onednn_operators() == torch.backends.mkldnn.is_available()


# LPIPS through the project's network


@pytest.fixture
def alex(alex_home: Path) -> torch.nn.Module:
    return build_lpips_network("alex", allow_download=False)


@pytest.fixture
def winograd_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Input shapes of every Winograd convolution run (the real one still runs)."""
    calls: list[tuple[int, ...]] = []
    call = WinogradConv2d.__call__

    def spy(self: WinogradConv2d, x: torch.Tensor, **kwargs: bool) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return call(self, x, **kwargs)

    monkeypatch.setattr(WinogradConv2d, "__call__", spy)
    return calls


def photo_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = []
    for name in ("astronaut.png", "camera.png", "chelsea.png"):
        image = real_image(name)
        for kind in DEGRADATION_KINDS:
            pairs.append((f"{name}/{kind}", image, degrade(image, kind)))
    return pairs


def as_batch(image: np.ndarray) -> torch.Tensor:
    array = image if image.ndim == 3 else image[..., None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).unsqueeze(0).float()


def test_lpips_matches_the_lpips_package(alex: torch.nn.Module, winograd_calls: list) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = lpips_package.LPIPS(net="alex", verbose=False).eval()
    worst = 0.0
    for name, image, degraded in photo_pairs():
        x, y = as_batch(image), as_batch(degraded)
        before = len(winograd_calls)
        with torch.inference_mode():
            got = lpips(x, y, data_range=255, network=alex).item()
            expected = reference(
                (x / 127.5 - 1).expand(-1, 3, -1, -1), (y / 127.5 - 1).expand(-1, 3, -1, -1)
            ).item()
        assert len(winograd_calls) - before == 8, name
        assert expected > 0, name
        worst = max(worst, abs(got - expected))
    assert worst <= LPIPS_TOLERANCE


def test_lpips_equals_the_direct_convolutions(
    alex: torch.nn.Module, winograd_calls: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = as_batch(real_image("astronaut.png")), as_batch(degrade(real_image("astronaut.png"), "noise"))
    x, y = torch.cat([x, y]), torch.cat([y, x.flip(-1)])
    with torch.inference_mode():
        fast = lpips(x, y, data_range=255, network=alex)
        assert len(winograd_calls) == 8
        monkeypatch.setattr(perceptual, "USE_WINOGRAD", False)
        direct = lpips(x, y, data_range=255, network=alex)
    assert len(winograd_calls) == 8
    assert fast.shape == (2,)
    torch.testing.assert_close(fast, direct, rtol=0, atol=LPIPS_TOLERANCE)


def test_gradient_path_uses_the_convolution_modules(alex: torch.nn.Module, winograd_calls: list) -> None:
    x, y = torch.rand(2, 1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_()
    lpips(x, y, data_range=1.0, network=alex).sum().backward()
    assert winograd_calls == []
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_changed_weights_are_prepared_again(
    alex: torch.nn.Module, winograd_calls: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = torch.rand(2, 1, 3, 96, 80, generator=torch.Generator().manual_seed(1))
    conv = alex.net.slice3[1]

    def score() -> torch.Tensor:
        with torch.inference_mode():
            return lpips(x, y, data_range=1.0, network=alex)

    score()
    first = perceptual._PREPARED[conv].conv
    with torch.no_grad():
        conv.weight.mul_(-1)
    edited = score()
    second = perceptual._PREPARED[conv].conv
    alex.to(torch.float64).to(torch.float32)
    moved = score()
    third = perceptual._PREPARED[conv].conv
    assert len(winograd_calls) == 3 * 8
    monkeypatch.setattr(perceptual, "USE_WINOGRAD", False)
    direct = score()
    assert first is not second and second is not third
    torch.testing.assert_close(moved, edited, rtol=0, atol=0)
    torch.testing.assert_close(edited, direct, rtol=0, atol=LPIPS_TOLERANCE)


def test_threads_share_one_prepared_network(
    alex: torch.nn.Module, winograd_calls: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = []
    lock = threading.Lock()
    from_conv = WinogradConv2d.from_conv.__func__

    def counting(cls: type, conv: torch.nn.Conv2d, output_tile: int | None = None) -> WinogradConv2d:
        with lock:
            prepared.append(conv)
        return from_conv(cls, conv, output_tile)

    monkeypatch.setattr(WinogradConv2d, "from_conv", classmethod(counting))
    x, y = torch.rand(2, 4, 3, 72, 88, generator=torch.Generator().manual_seed(2))

    def score(index: int) -> torch.Tensor:
        with torch.inference_mode():
            return lpips(x[index : index + 1], y[index : index + 1], data_range=1.0, network=alex)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(score, [0, 1, 2, 3] * 2))
    assert len(prepared) == 4
    assert len(winograd_calls) == 8 * 8
    with torch.inference_mode():
        expected = lpips(x, y, data_range=1.0, network=alex)
    torch.testing.assert_close(torch.cat(results), expected.repeat(2), rtol=0, atol=LPIPS_TOLERANCE)


def test_trunk_features_equal_the_backbone(alex: torch.nn.Module, winograd_calls: list) -> None:
    """What `pipeline.similar` embeds: the backbone's layer outputs, via Winograd without gradients."""
    x = as_batch(real_image("coffee.png")) / 127.5 - 1
    with torch.inference_mode():
        trunk_input = alex.scaling_layer(x)
        fast = perceptual.trunk_features(alex, trunk_input)
        direct = alex.net(trunk_input)
    assert len(winograd_calls) == 4
    assert len(fast) == len(direct) == alex.L
    for got, expected in zip(fast, direct, strict=True):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-5 * expected.abs().max().item())
