"""LPIPS distance: oracle tests against the `lpips` package on real photos (same seeded backbone weights),
the strip-wise reduction, stored integers, gradients and input checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips as lpips_package
import pytest
import torch
from conftest import degradations, install, read_photo, reference_input, to_batch

from pipeline.metrics import build_lpips_network, lpips, perceptual
from pipeline.metrics.lpips_weights import backbone_filename
from pipeline.metrics.perceptual import lpips_of_stored_values

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "camera.png")
TOLERANCE = 1e-5


def max_difference_to_reference(net: str, weights: Path) -> float:
    """Ours with `weights`, against the `lpips` package with the same checkpoint from torchvision's cache."""
    ours = build_lpips_network(net, weights, allow_download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = lpips_package.LPIPS(net=net, verbose=False)
    worst = 0.0
    with torch.inference_mode():
        for name in PHOTOS:
            image = read_photo(name)
            ref_batch = to_batch([image] * 3)
            out_batch = to_batch(degradations(image))
            got = lpips(ref_batch, out_batch, data_range=255, network=ours)
            expected = reference(reference_input(ref_batch), reference_input(out_batch)).flatten()
            assert got.shape == (3,)
            assert (expected > 0.0).all()
            worst = max(worst, (got - expected).abs().max().item())
    return worst


# Oracle: the lpips package with torchvision's loader on the same checkpoint


def test_alex_matches_lpips_package(alex_home: Path, alex_weights: Path) -> None:
    assert max_difference_to_reference("alex", alex_weights) <= TOLERANCE


def test_network_forward_takes_the_packages_inputs(alex_weights: Path) -> None:
    """Like `lpips.LPIPS`, calling the network takes images in [-1, 1] and gives (N, 1, 1, 1)."""
    network = build_lpips_network("alex", alex_weights, allow_download=False)
    image = to_batch([read_photo("chelsea.png")])[..., :96, :128]
    blurred = to_batch([degradations(read_photo("chelsea.png"))[1]])[..., :96, :128]
    with torch.inference_mode():
        called = network(reference_input(image), reference_input(blurred))
        scored = lpips(image, blurred, data_range=255, network=network)
    assert called.shape == (1, 1, 1, 1)
    torch.testing.assert_close(called.flatten(), scored, rtol=0, atol=1e-6)
    assert scored.item() > 0.0


def test_squeeze_matches_lpips_package(torch_home: Path, checkpoint_store: Path) -> None:
    install(checkpoint_store / "squeeze-seed0.pth", torch_home / backbone_filename("squeeze"))
    assert max_difference_to_reference("squeeze", checkpoint_store / "squeeze-seed0.pth") <= TOLERANCE


def test_gradient_flows_to_the_input(squeeze_network: torch.nn.Module) -> None:
    x, y = torch.rand(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_()
    lpips(x, y, data_range=1.0, network=squeeze_network).sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0


def test_identical_images_give_zero_per_image(squeeze_network: torch.nn.Module) -> None:
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 255
    with torch.inference_mode():
        distance = lpips(x, x.clone(), data_range=255, network=squeeze_network)
    assert distance.shape == (3,)
    assert distance.abs().max() < 1e-6


def test_gray_equals_replicated_rgb(squeeze_network: torch.nn.Module) -> None:
    x, y = torch.rand(2, 2, 1, 48, 48, generator=torch.Generator().manual_seed(3))
    gray = lpips(x, y, data_range=1.0, network=squeeze_network)
    rgb = lpips(x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1), data_range=1.0, network=squeeze_network)
    torch.testing.assert_close(gray, rgb)


def test_data_range_scales_inputs(squeeze_network: torch.nn.Module) -> None:
    x, y = torch.rand(2, 2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    unit = lpips(x, y, data_range=1.0, network=squeeze_network)
    wide = lpips(x * 65535, y * 65535, data_range=65535, network=squeeze_network)
    torch.testing.assert_close(unit, wide, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 16), "same dimensions"),
        (torch.rand(1, 4, 32, 32), torch.rand(1, 4, 32, 32), "1 or 3 channels"),
        (torch.rand(3, 32, 32), torch.rand(3, 32, 32), "4-D"),
    ],
)
def test_bad_inputs_are_rejected(
    squeeze_network: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        lpips(x, y, data_range=1.0, network=squeeze_network)


def test_repeated_calls_are_deterministic(squeeze_network: torch.nn.Module) -> None:
    x, y = torch.rand(2, 1, 3, 48, 48, generator=torch.Generator().manual_seed(5))
    first = lpips(x, y, data_range=1.0, network=squeeze_network)
    second = lpips(x, y, data_range=1.0, network=squeeze_network)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_strip_reduction_equals_the_lpips_package(
    alex_home: Path, alex_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = read_photo("astronaut.png")[:192, :256]
    x, y = to_batch([image]), to_batch([degradations(image)[0]])
    reference = lpips_package.LPIPS(net="alex", verbose=False).eval()
    expected = reference(x / 127.5 - 1, y / 127.5 - 1).item()
    monkeypatch.setattr(perceptual, "LAYER_STRIP_VALUES", 2000)
    network = build_lpips_network("alex", alex_weights, allow_download=False)
    with torch.inference_mode():
        got = lpips(x, y, data_range=255, network=network).item()
    assert abs(got - expected) < TOLERANCE


def test_stored_integers_give_the_float_values(squeeze_network: torch.nn.Module) -> None:
    image = read_photo("chelsea.png")[:96, :128]
    ref, out = to_batch([image]), to_batch([degradations(image)[1]])
    stored_ref = torch.from_numpy(image[None].copy()).permute(0, 3, 1, 2)
    stored_out = torch.from_numpy(degradations(image)[1][None].copy()).permute(0, 3, 1, 2)
    with torch.inference_mode():
        expected = lpips(ref, out, data_range=255, network=squeeze_network)
        got = lpips_of_stored_values(stored_ref, stored_out, data_range=255, network=squeeze_network)
    assert stored_ref.dtype == torch.uint8
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
