"""SSIMLoss and MSSSIMLoss: exact gradients (gradcheck in float64), training, reductions, buffers."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import SSIM_TOL, real_image
from torch.autograd import gradcheck

from pipeline.metrics import MSSSIMLoss, SSIMLoss, ms_ssim, ssim
from pipeline.metrics.ssim import ms_ssim_min_side


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one intra-op thread avoids thread-pool contention that makes gradcheck ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def photo_crop(size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A (1, 1, size, size) crop of the camera photo scaled to [0, 1]."""
    image = real_image("camera.png")[100 : 100 + size, 200 : 200 + size]
    return torch.from_numpy(image.copy()).to(dtype)[None, None] / 255


def noisy(x: torch.Tensor, seed: int, sigma: float = 0.1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)).clamp(0, 1)


def test_ssim_gradcheck_both_inputs():
    x = photo_crop(16).requires_grad_()
    y = noisy(photo_crop(16), seed=0).requires_grad_()
    assert gradcheck(lambda a, b: ssim(a, b, data_range=1.0), (x, y))


def test_ms_ssim_gradcheck_at_minimal_size():
    side = ms_ssim_min_side(2)
    x = photo_crop(side).requires_grad_()
    y = noisy(photo_crop(side), seed=1).requires_grad_()
    assert gradcheck(lambda a, b: ms_ssim(a, b, data_range=1.0, scales=2), (x, y))


def test_ssim_gradcheck_on_a_volume():
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, 11, 12, 11, generator=generator, dtype=torch.float64)
    y = noisy(x, seed=3).requires_grad_()
    assert gradcheck(lambda b: ssim(x, b, data_range=1.0), (y,))


@pytest.mark.parametrize(
    ("loss_fn", "side"),
    [(SSIMLoss(data_range=1.0), 16), (MSSSIMLoss(data_range=1.0, scales=2), ms_ssim_min_side(2))],
    ids=["ssim", "ms_ssim"],
)
def test_loss_modules_gradcheck(loss_fn, side):
    loss_fn = loss_fn.double()
    target = photo_crop(side)
    prediction = noisy(target, seed=4).requires_grad_()
    assert gradcheck(lambda p: loss_fn(p, target), (prediction,))


@pytest.mark.parametrize("loss_fn", [SSIMLoss(data_range=1.0), MSSSIMLoss(data_range=1.0, scales=3)])
def test_adam_steps_lower_the_loss(loss_fn):
    target = photo_crop(48, torch.float32)
    prediction = noisy(target, seed=5, sigma=0.3).requires_grad_()
    optimizer = torch.optim.Adam([prediction], lr=0.02)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_fn(prediction, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert losses[-1] < 0.8 * losses[0]


def test_loss_is_one_minus_the_metric():
    target = photo_crop(48).expand(3, 1, 48, 48)
    prediction = torch.cat([noisy(target[:1], seed=s) for s in range(3)])
    expected_ssim = 1 - ssim(prediction, target, data_range=1.0)
    expected_ms = 1 - ms_ssim(prediction, target, data_range=1.0, scales=3)
    got_ssim = SSIMLoss(data_range=1.0, reduction="none").double()(prediction, target)
    got_ms = MSSSIMLoss(data_range=1.0, reduction="none", scales=3).double()(prediction, target)
    torch.testing.assert_close(got_ssim, expected_ssim, rtol=0, atol=SSIM_TOL)
    torch.testing.assert_close(got_ms, expected_ms, rtol=0, atol=SSIM_TOL)


@pytest.mark.parametrize(("reduction", "shape"), [("mean", ()), ("sum", ()), ("none", (4,))])
@pytest.mark.parametrize("make", [lambda r: SSIMLoss(1.0, r), lambda r: MSSSIMLoss(1.0, r, scales=2)])
def test_reduction_shapes(make, reduction, shape):
    generator = torch.Generator().manual_seed(6)
    x = torch.rand(4, 3, 24, 24, generator=generator)
    y = torch.rand(4, 3, 24, 24, generator=generator)
    loss_fn = make(reduction)
    per_image = make("none")(x, y)
    loss = loss_fn(x, y)
    assert loss.shape == shape
    if reduction == "sum":
        torch.testing.assert_close(loss, per_image.sum())
    if reduction == "mean":
        torch.testing.assert_close(loss, per_image.mean())


def test_volume_loss():
    generator = torch.Generator().manual_seed(7)
    target = torch.rand(2, 1, 12, 14, 16, generator=generator)
    loss_fn = SSIMLoss(data_range=1.0, reduction="none", spatial_dims=3)
    assert loss_fn(target, target).abs().max() < 1e-6
    assert loss_fn(noisy(target, seed=8), target).shape == (2,)
    with pytest.raises(ValueError, match=r"spatial_dims=3.*\(1, 1, 16, 16\)"):
        loss_fn(photo_crop(16, torch.float32), photo_crop(16, torch.float32))


def test_window_is_a_non_persistent_buffer_that_follows_to():
    loss_fn = SSIMLoss(data_range=1.0)
    assert "window" in dict(loss_fn.named_buffers())
    assert "window" not in loss_fn.state_dict()
    assert loss_fn.window.shape == (11,)
    assert loss_fn.to(torch.float64).window.dtype == torch.float64
    ms_loss = MSSSIMLoss(data_range=1.0).to(torch.device("meta"))
    assert ms_loss.window.device.type == "meta"


@pytest.mark.gpu
def test_window_moves_to_cuda():
    loss_fn = SSIMLoss(data_range=1.0).cuda()
    assert loss_fn.window.is_cuda
    x = torch.rand(1, 3, 16, 16, device="cuda", requires_grad=True)
    loss_fn(x, torch.rand_like(x)).backward()
    assert x.grad is not None and x.grad.is_cuda


@pytest.mark.parametrize("cls", [SSIMLoss, MSSSIMLoss])
def test_invalid_arguments_raise(cls):
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        cls(data_range=1.0, reduction="avg")
    with pytest.raises(ValueError, match="data_range"):
        cls(data_range=0)
    with pytest.raises(ValueError, match="spatial_dims"):
        cls(data_range=1.0, spatial_dims=1)


def test_invalid_scales_raise():
    with pytest.raises(ValueError, match="1 to 5 scales, got 6"):
        MSSSIMLoss(data_range=1.0, scales=6)
