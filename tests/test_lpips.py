"""LPIPS: oracle tests against the `lpips` package on real photos, strict weight loading, offline errors.

No test touches the network: backbones are seeded random torchvision models saved into a temporary
torchvision cache ($TORCH_HOME/hub/checkpoints), which the reference `lpips.LPIPS` also reads.
"""

from __future__ import annotations

import io
import re
import urllib.error
import warnings
from pathlib import Path

import lpips as lpips_package
import numpy as np
import pytest
import skimage
import torch
from conftest import install, seeded_state_dict
from PIL import Image, ImageFilter

from pipeline.errors import WeightsError
from pipeline.metrics.perceptual import (
    BACKBONES,
    backbone_cache_path,
    backbone_filename,
    backbone_url,
    build_lpips_network,
    lpips,
    resolve_backbone,
)

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "camera.png")
TOLERANCE = 1e-5


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to download weights."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected download: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def read_photo(name: str) -> np.ndarray:
    with Image.open(SKIMAGE_DATA / name) as image:
        return np.asarray(image.convert("L" if name == "camera.png" else "RGB"))


def degradations(image: np.ndarray) -> list[np.ndarray]:
    """JPEG q=20, Gaussian blur, Gaussian noise: three uint8 images shaped like `image`."""
    pil = Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=20)
    jpeg = np.asarray(Image.open(buffer).convert(pil.mode))
    blur = np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=2)))
    noise = np.random.default_rng(0).normal(0.0, 12.0, image.shape)
    noisy = np.clip(image + noise, 0, 255).round().astype(np.uint8)
    return [jpeg, blur, noisy]


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W[, 3]) images -> float (N, C, H, W) in [0, 255]."""
    batch = torch.from_numpy(np.stack(images)).float()
    return batch.unsqueeze(1) if batch.dim() == 3 else batch.permute(0, 3, 1, 2)


def reference_input(batch: torch.Tensor) -> torch.Tensor:
    """The `lpips` package's convention: RGB in [-1, 1] as im / 127.5 - 1."""
    return (batch / 127.5 - 1).expand(-1, 3, -1, -1)


def max_difference_to_reference(net: str) -> float:
    ours = build_lpips_network(net, allow_download=False)
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


def test_alex_matches_lpips_package(alex_home: Path) -> None:
    assert max_difference_to_reference("alex") <= TOLERANCE


def test_network_forward_takes_the_packages_inputs(alex_home: Path) -> None:
    """Like `lpips.LPIPS`, calling the network takes images in [-1, 1] and gives (N, 1, 1, 1)."""
    network = build_lpips_network("alex", allow_download=False)
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
    assert max_difference_to_reference("squeeze") <= TOLERANCE


# The backbone really comes from the checkpoint


def test_backbone_parameters_equal_checkpoint(alex_home: Path, checkpoint_store: Path) -> None:
    network = build_lpips_network("alex", allow_download=False)
    checkpoint = seeded_state_dict("alex", 0)
    trunk = network.net.state_dict()
    assert len(trunk) == 10
    for key, value in trunk.items():
        _, feature_key = key.split(".", 1)
        torch.testing.assert_close(value, checkpoint[f"features.{feature_key}"], rtol=0, atol=0)


def test_other_checkpoint_gives_other_values(alex_home: Path, checkpoint_store: Path) -> None:
    x, y = torch.rand(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seed0 = lpips(x, y, data_range=1.0, network=build_lpips_network("alex"))
    seed1 = lpips(
        x, y, data_range=1.0, network=build_lpips_network("alex", str(checkpoint_store / "alex-seed1.pth"))
    )
    assert (seed0 - seed1).abs().min() > 1e-4


def test_network_is_frozen_and_in_eval_mode(alex_home: Path) -> None:
    network = build_lpips_network("alex", allow_download=False)
    assert not network.training
    assert not any(parameter.requires_grad for parameter in network.parameters())


@pytest.mark.filterwarnings("error")
def test_cached_build_neither_downloads_nor_warns(alex_home: Path, no_download: None) -> None:
    build_lpips_network("alex")


# Finding the file


@pytest.mark.parametrize(
    ("net", "filename"),
    [
        ("alex", "alexnet-owt-7be5be79.pth"),
        ("vgg", "vgg16-397923af.pth"),
        ("squeeze", "squeezenet1_1-b8a52dc0.pth"),
    ],
)
def test_backbone_names_follow_torchvision(torch_home: Path, net: str, filename: str) -> None:
    assert net in BACKBONES
    assert backbone_filename(net) == filename
    assert backbone_url(net) == f"https://download.pytorch.org/models/{filename}"
    assert backbone_cache_path(net) == torch_home / filename


def test_unknown_net_is_rejected() -> None:
    with pytest.raises(WeightsError, match="resnet"):
        backbone_url("resnet")


def test_missing_offline_says_which_file_and_where(torch_home: Path, no_download: None) -> None:
    with pytest.raises(WeightsError) as info:
        build_lpips_network("alex", allow_download=False)
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message
    assert str(torch_home) in message
    assert backbone_url("alex") in message
    assert "--lpips-weights" in message


def test_failed_download_is_a_weights_error(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="download failed") as info:
        resolve_backbone("alex")
    assert str(torch_home) in str(info.value)
    assert "alexnet-owt-7be5be79.pth" in str(info.value)


def test_download_goes_into_the_cache(
    torch_home: Path, checkpoint_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fetch(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, hash_prefix))
        install(checkpoint_store / "squeeze-seed0.pth", Path(dst))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fetch)
    assert resolve_backbone("squeeze") == torch_home / "squeezenet1_1-b8a52dc0.pth"
    assert calls == [(backbone_url("squeeze"), "b8a52dc0")]


def test_explicit_file_and_folder(torch_home: Path, checkpoint_store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    file = install(checkpoint_store / "alex-seed0.pth", folder / backbone_filename("alex"))
    assert resolve_backbone("alex", str(file), allow_download=False) == file
    assert resolve_backbone("alex", str(folder), allow_download=False) == file
    network = build_lpips_network("alex", str(folder), allow_download=False)
    torch.testing.assert_close(
        network.net.slice1[0].weight, seeded_state_dict("alex", 0)["features.0.weight"]
    )


def test_explicit_path_is_the_only_place_looked_at(alex_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "alexnet.pth"
    with pytest.raises(WeightsError, match="nowhere") as info:
        resolve_backbone("alex", str(missing))
    assert "alexnet-owt-7be5be79.pth" in str(info.value)
    with pytest.raises(WeightsError, match=re.escape("alexnet-owt-7be5be79.pth")):
        resolve_backbone("alex", str(tmp_path))


# Bad files fail loudly


def test_garbage_file_fails(torch_home: Path) -> None:
    path = torch_home / backbone_filename("alex")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(WeightsError, match="cannot be read") as info:
        build_lpips_network("alex", allow_download=False)
    assert str(path) in str(info.value)


def test_truncated_file_fails(torch_home: Path, checkpoint_store: Path) -> None:
    path = torch_home / backbone_filename("squeeze")
    path.parent.mkdir(parents=True)
    path.write_bytes((checkpoint_store / "squeeze-seed0.pth").read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="cannot be read"):
        build_lpips_network("squeeze", allow_download=False)


def test_wrong_architecture_fails(torch_home: Path, checkpoint_store: Path) -> None:
    path = install(checkpoint_store / "squeeze-seed0.pth", torch_home / backbone_filename("alex"))
    with pytest.raises(WeightsError, match="does not match") as info:
        build_lpips_network("alex", allow_download=False)
    assert str(path) in str(info.value)


def test_partial_checkpoint_fails(torch_home: Path) -> None:
    state = seeded_state_dict("squeeze", 0)
    del state["features.12.expand3x3.bias"]
    torch_home.mkdir(parents=True)
    torch.save(state, torch_home / backbone_filename("squeeze"))
    with pytest.raises(WeightsError, match="expand3x3"):
        build_lpips_network("squeeze", allow_download=False)


def test_non_state_dict_fails(torch_home: Path) -> None:
    torch_home.mkdir(parents=True)
    torch.save([torch.zeros(3)], torch_home / backbone_filename("squeeze"))
    with pytest.raises(WeightsError, match="not a state dict"):
        build_lpips_network("squeeze", allow_download=False)


# The function


@pytest.fixture
def squeeze_network(torch_home: Path, checkpoint_store: Path) -> torch.nn.Module:
    install(checkpoint_store / "squeeze-seed0.pth", torch_home / backbone_filename("squeeze"))
    return build_lpips_network("squeeze", allow_download=False)


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


def test_strip_reduction_equals_the_lpips_package(alex_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    perceptual = importlib.import_module("pipeline.metrics.perceptual")
    image = read_photo("astronaut.png")[:192, :256]
    x, y = to_batch([image]), to_batch([degradations(image)[0]])
    reference = lpips_package.LPIPS(net="alex", verbose=False).eval()
    expected = reference(x / 127.5 - 1, y / 127.5 - 1).item()
    monkeypatch.setattr(perceptual, "LAYER_STRIP_VALUES", 2000)
    network = build_lpips_network("alex", allow_download=False)
    with torch.inference_mode():
        got = lpips(x, y, data_range=255, network=network).item()
    assert abs(got - expected) < TOLERANCE


def test_stored_integers_give_the_float_values(squeeze_network: torch.nn.Module) -> None:
    from pipeline.metrics.perceptual import lpips_of_stored_values

    image = read_photo("chelsea.png")[:96, :128]
    ref, out = to_batch([image]), to_batch([degradations(image)[1]])
    stored_ref = torch.from_numpy(image[None].copy()).permute(0, 3, 1, 2)
    stored_out = torch.from_numpy(degradations(image)[1][None].copy()).permute(0, 3, 1, 2)
    with torch.inference_mode():
        expected = lpips(ref, out, data_range=255, network=squeeze_network)
        got = lpips_of_stored_values(stored_ref, stored_out, data_range=255, network=squeeze_network)
    assert stored_ref.dtype == torch.uint8
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_layer_no_file_filled_stops_the_build(alex_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    perceptual = importlib.import_module("pipeline.metrics.perceptual")
    monkeypatch.setattr(perceptual, "_load_linear_layers", lambda network, net: None)
    with pytest.raises(WeightsError, match=r"lin0\.model"):
        build_lpips_network("alex", allow_download=False)
