"""LPIPS weights: finding the backbone file, strict loading of both files, clear errors offline."""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import pytest
import torch
from conftest import install, seeded_state_dict

from pipeline.errors import WeightsError
from pipeline.metrics import build_lpips_network, lpips, lpips_weights
from pipeline.metrics.lpips_weights import (
    BACKBONE_FILES,
    backbone_cache_path,
    backbone_filename,
    backbone_url,
    resolve_backbone,
)

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
    assert net in BACKBONE_FILES
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


def test_a_layer_no_file_filled_stops_the_build(alex_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lpips_weights, "_load_linear_layers", lambda network, net: None)
    with pytest.raises(WeightsError, match=r"lin0\.model"):
        build_lpips_network("alex", allow_download=False)
