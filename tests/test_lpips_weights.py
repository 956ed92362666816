"""LPIPS weights: finding the backbone file, its hash against its name, strict loading of both files, clear
one-line errors offline."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
from conftest import hash_named, install, seeded_state_dict, sha256_of

from pipeline.errors import WeightsError
from pipeline.metrics import build_lpips_network, lpips, lpips_weights
from pipeline.metrics.lpips_weights import (
    BACKBONE_FILES,
    backbone_cache_path,
    backbone_filename,
    backbone_url,
    load_backbone_weights,
    name_hash_prefix,
    resolve_backbone,
    verify_backbone,
)

# The backbone really comes from the checkpoint


def test_backbone_parameters_equal_checkpoint(alex_weights: Path) -> None:
    network = build_lpips_network("alex", alex_weights, allow_download=False)
    checkpoint = seeded_state_dict("alex", 0)
    trunk = network.net.state_dict()
    assert len(trunk) == 10
    for key, value in trunk.items():
        _, feature_key = key.split(".", 1)
        torch.testing.assert_close(value, checkpoint[f"features.{feature_key}"], rtol=0, atol=0)


def test_other_checkpoint_gives_other_values(alex_weights: Path, checkpoint_store: Path) -> None:
    x, y = torch.rand(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seed0 = lpips(x, y, data_range=1.0, network=build_lpips_network("alex", alex_weights))
    seed1 = lpips(
        x, y, data_range=1.0, network=build_lpips_network("alex", str(checkpoint_store / "alex-seed1.pth"))
    )
    assert (seed0 - seed1).abs().min() > 1e-4


def test_network_is_frozen_and_in_eval_mode(alex_weights: Path) -> None:
    network = build_lpips_network("alex", alex_weights, allow_download=False)
    assert not network.training
    assert not any(parameter.requires_grad for parameter in network.parameters())


@pytest.mark.filterwarnings("error")
def test_cached_file_named_after_its_hash_is_used_without_download_or_warning(
    torch_home: Path, checkpoint_store: Path, monkeypatch: pytest.MonkeyPatch, no_download: None
) -> None:
    cached = hash_named(checkpoint_store / "alex-seed0.pth", torch_home, "alexnet-owt")
    monkeypatch.setitem(BACKBONE_FILES, "alex", cached.name)
    assert resolve_backbone("alex") == cached
    network = build_lpips_network("alex")
    torch.testing.assert_close(
        network.net.slice1[0].weight, seeded_state_dict("alex", 0)["features.0.weight"], rtol=0, atol=0
    )


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


def test_explicit_file_named_after_its_hash_is_loaded(checkpoint_store: Path, tmp_path: Path) -> None:
    file = hash_named(checkpoint_store / "alex-seed0.pth", tmp_path, "alexnet")
    network = build_lpips_network("alex", str(file), allow_download=False)
    torch.testing.assert_close(
        network.net.slice1[0].weight, seeded_state_dict("alex", 0)["features.0.weight"], rtol=0, atol=0
    )


def test_explicit_path_is_the_only_place_looked_at(alex_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "alexnet.pth"
    with pytest.raises(WeightsError, match="nowhere") as info:
        resolve_backbone("alex", str(missing))
    assert "alexnet-owt-7be5be79.pth" in str(info.value)
    with pytest.raises(WeightsError, match=re.escape("alexnet-owt-7be5be79.pth")):
        resolve_backbone("alex", str(tmp_path))


# The name's hash prefix, torchvision's convention


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("alexnet-owt-7be5be79.pth", "7be5be79"),
        ("vgg16-397923af.pth", "397923af"),
        ("squeezenet1_1-b8a52dc0.pth", "b8a52dc0"),
        ("resnet50-0676ba61c0ffee.pth", "0676ba61c0ffee"),
        ("alexnet-seeded.pth", None),
        ("alex-seed0.pth", None),
        ("alexnet-7be5be7.pth", None),
        ("alexnet-7BE5BE79.pth", None),
        ("7be5be79.pth", None),
    ],
)
def test_name_hash_prefix(name: str, prefix: str | None) -> None:
    assert name_hash_prefix(name) == prefix


def assert_one_line(info: pytest.ExceptionInfo[WeightsError], *needles: str) -> str:
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_cached_file_whose_hash_differs_from_its_name_is_refused(alex_home: Path, no_download: None) -> None:
    actual = sha256_of(alex_home)
    assert not actual.startswith("7be5be79")
    with pytest.raises(WeightsError) as info:
        build_lpips_network("alex")
    assert_one_line(
        info,
        str(alex_home),
        f"sha256 starts with {actual[:8]}",
        "its name says 7be5be79",
        "--lpips-weights FILE",
    )
    with pytest.raises(WeightsError, match=f"starts with {actual[:8]}"):
        verify_backbone("alex", resolve_backbone("alex"))


def test_explicit_file_whose_hash_differs_from_its_name_is_refused(
    checkpoint_store: Path, tmp_path: Path
) -> None:
    wrong = install(checkpoint_store / "alex-seed0.pth", tmp_path / "alexnet-0123abcd.pth")
    with pytest.raises(WeightsError) as info:
        build_lpips_network("alex", str(wrong), allow_download=False)
    assert_one_line(info, str(wrong), f"starts with {sha256_of(wrong)[:8]}", "its name says 0123abcd")


def test_verified_file_records_its_sha256(
    alex_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backbone = verify_backbone("alex", alex_weights)
    assert backbone.path == alex_weights and backbone.sha256 == sha256_of(alex_weights)
    assert backbone.size == alex_weights.stat().st_size
    named = hash_named(alex_weights, tmp_path, "alexnet")
    monkeypatch.chdir(tmp_path)
    relative = verify_backbone("alex", Path(named.name))
    assert relative.path == named and relative.sha256 == backbone.sha256


def test_a_file_is_hashed_once_until_it_changes(
    checkpoint_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = Path(shutil.copyfile(checkpoint_store / "squeeze-seed0.pth", tmp_path / "squeeze-copy.pth"))
    hashed = []
    real_digest = lpips_weights.hashlib.file_digest
    monkeypatch.setattr(
        lpips_weights.hashlib, "file_digest", lambda f, name: hashed.append(f.name) or real_digest(f, name)
    )
    first = verify_backbone("squeeze", file)
    build_lpips_network("squeeze", str(file))
    assert verify_backbone("squeeze", file) == first and hashed == [str(file)]
    os.utime(file, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    assert verify_backbone("squeeze", file).mtime_ns != first.mtime_ns and len(hashed) == 2


def test_a_verified_file_is_built_without_hashing_it_again(
    alex_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backbone = verify_backbone("alex", alex_weights)

    def no_hashing(*args: object) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(lpips_weights, "_sha256", no_hashing)
    network = build_lpips_network("alex", backbone, allow_download=False)
    torch.testing.assert_close(
        network.net.slice1[0].weight, seeded_state_dict("alex", 0)["features.0.weight"], rtol=0, atol=0
    )


def test_a_verified_file_that_changed_is_refused(checkpoint_store: Path, tmp_path: Path) -> None:
    file = Path(shutil.copyfile(checkpoint_store / "squeeze-seed0.pth", tmp_path / "squeeze-copy.pth"))
    backbone = verify_backbone("squeeze", file)
    file.unlink()
    torch.save(seeded_state_dict("squeeze", 0), file)
    os.utime(file, ns=(backbone.mtime_ns + 10**9, backbone.mtime_ns + 10**9))
    with pytest.raises(WeightsError) as info:
        build_lpips_network("squeeze", backbone)
    assert_one_line(info, str(file), "changed after it was checked")
    file.unlink()
    with pytest.raises(WeightsError) as info:
        build_lpips_network("squeeze", backbone)
    assert_one_line(info, str(file), "cannot be read")


# Weights shipped to workers: the backbone's features, checked by their digest


def test_shipped_weights_build_the_same_network_without_the_file(
    checkpoint_store: Path, tmp_path: Path
) -> None:
    file = Path(shutil.copyfile(checkpoint_store / "squeeze-seed0.pth", tmp_path / "squeeze-copy.pth"))
    backbone = verify_backbone("squeeze", file)
    weights = load_backbone_weights("squeeze", backbone)
    from_file = build_lpips_network("squeeze", backbone)
    file.unlink()
    received = pickle.loads(pickle.dumps(weights))  # as a worker receives the plugin
    shipped = build_lpips_network("squeeze", received)
    assert received.file == backbone
    for (name, expected), (_, built) in zip(
        from_file.state_dict().items(), shipped.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(built, expected, rtol=0, atol=0, msg=name)


def test_only_the_alexnet_features_are_shipped(alex_weights: Path) -> None:
    weights = load_backbone_weights("alex", verify_backbone("alex", alex_weights))
    features = {k: v for k, v in seeded_state_dict("alex", 0).items() if k.startswith("features.")}
    assert sorted(weights.features) == sorted(key.removeprefix("features.") for key in features)
    assert weights.nbytes == sum(tensor.nbytes for tensor in features.values())
    assert len(pickle.dumps(weights)) < alex_weights.stat().st_size / 20


def test_damaged_shipped_weights_are_refused(checkpoint_store: Path) -> None:
    weights = load_backbone_weights(
        "squeeze", verify_backbone("squeeze", checkpoint_store / "squeeze-seed0.pth")
    )
    weights.features["0.weight"][0, 0, 0, 0] += 1
    with pytest.raises(WeightsError) as info:
        build_lpips_network("squeeze", weights)
    assert_one_line(info, str(checkpoint_store / "squeeze-seed0.pth"), "damaged on the way", "Run again")


def test_a_verified_file_that_changed_is_not_shipped(checkpoint_store: Path, tmp_path: Path) -> None:
    file = Path(shutil.copyfile(checkpoint_store / "squeeze-seed0.pth", tmp_path / "squeeze-copy.pth"))
    backbone = verify_backbone("squeeze", file)
    os.utime(file, ns=(backbone.mtime_ns + 10**9, backbone.mtime_ns + 10**9))
    with pytest.raises(WeightsError) as info:
        load_backbone_weights("squeeze", backbone)
    assert_one_line(info, str(file), "changed after it was checked")


# Bad files fail loudly


def test_garbage_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "alexnet-mine.pth"
    path.write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(WeightsError) as info:
        verify_backbone("alex", path)
    assert_one_line(info, str(path), "cannot be loaded", "alexnet-owt-7be5be79.pth")


def test_garbage_under_torchvision_name_fails_on_its_hash(torch_home: Path) -> None:
    path = torch_home / backbone_filename("alex")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(WeightsError) as info:
        build_lpips_network("alex", allow_download=False)
    assert_one_line(info, str(path), "its name says 7be5be79")


def test_truncated_file_fails(checkpoint_store: Path, tmp_path: Path) -> None:
    path = tmp_path / "squeeze-mine.pth"
    path.write_bytes((checkpoint_store / "squeeze-seed0.pth").read_bytes()[:100_000])
    with pytest.raises(WeightsError) as info:
        verify_backbone("squeeze", path)
    assert_one_line(info, str(path), "cannot be loaded", "truncated")
    with pytest.raises(WeightsError, match="cannot be loaded"):
        build_lpips_network("squeeze", str(path), allow_download=False)


def test_wrong_architecture_fails(checkpoint_store: Path, tmp_path: Path) -> None:
    path = install(checkpoint_store / "squeeze-seed0.pth", tmp_path / "alexnet-mine.pth")
    with pytest.raises(WeightsError) as info:
        verify_backbone("alex", path)
    assert_one_line(info, str(path), "does not match")


def test_partial_checkpoint_fails(tmp_path: Path) -> None:
    state = seeded_state_dict("squeeze", 0)
    del state["features.12.expand3x3.bias"]
    torch.save(state, tmp_path / "squeeze-partial.pth")
    with pytest.raises(WeightsError, match="expand3x3"):
        build_lpips_network("squeeze", tmp_path / "squeeze-partial.pth", allow_download=False)


def test_non_state_dict_fails(tmp_path: Path) -> None:
    torch.save([torch.zeros(3)], tmp_path / "squeeze-list.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        verify_backbone("squeeze", tmp_path / "squeeze-list.pth")


# The function


def test_a_layer_no_file_filled_stops_the_build(alex_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lpips_weights, "_load_linear_layers", lambda network, net: None)
    with pytest.raises(WeightsError, match=r"lin0\.model"):
        build_lpips_network("alex", alex_weights, allow_download=False)
