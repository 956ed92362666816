"""FID/KID's Inception extractor: weights found and verified like LPIPS's, features equal to torchmetrics'."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as fidelity
from conftest import degrade, hash_named, install, real_image, seeded_state_dict
from torchmetrics.image.fid import NoTrainInceptionV3

from pipeline.choices import InceptionResize
from pipeline.errors import UsageError, WeightsError
from pipeline.metrics.inception import (
    FEATURE_DIM,
    INCEPTION_FILE,
    INCEPTION_URL,
    InceptionWeights,
    build_inception,
    inception_features,
    inception_input,
    resolve_inception,
    seeded_inception_state_dict,
    verify_inception,
)
from pipeline.metrics.lpips_weights import name_hash_prefix

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """(6, 3, 256, 320) uint8: three real photos and their JPEG copies (not 299 px: resizing matters)."""
    images = [real_image(name)[:256, :320] for name in ("astronaut.png", "coffee.png", "chelsea.png")]
    images += [degrade(image, "jpeg") for image in images]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def verified(inception_weights: Path) -> InceptionWeights:
    return verify_inception(inception_weights)


def test_the_file_is_torch_fidelitys_checkpoint():
    assert fidelity.URL_INCEPTION_V3 == INCEPTION_URL
    assert name_hash_prefix(INCEPTION_FILE) == "6726825d"


@pytest.mark.parametrize("resize", InceptionResize.values())
def test_features_equal_torchmetrics_extractor(verified, inception_weights, photos, resize):
    antialias = resize == InceptionResize.TORCHMETRICS
    theirs = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(inception_weights), antialias=antialias)
    with torch.inference_mode():
        ours = inception_features(build_inception(verified, resize, CPU), photos)
        expected = theirs(photos)
    assert ours.shape == (len(photos), FEATURE_DIM) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert ours.std(dim=0).mean() > 1e-2 * ours.abs().mean()  # the seeded weights tell the photos apart


def test_the_two_resizings_give_different_features(verified, photos):
    with torch.inference_mode():
        antialiased, tensorflow = (
            inception_features(build_inception(verified, resize, CPU), photos[:2])
            for resize in InceptionResize.values()
        )
    assert not torch.allclose(antialiased, tensorflow, rtol=1e-3)


def test_inception_input_truncates_other_ranges_like_torchmetrics_normalize():
    values = torch.arange(0, 65536, 97, dtype=torch.int32).reshape(1, 1, 1, -1)
    expected = ((values.double() / 65535).float() * 255).byte()  # torchmetrics' normalize=True
    converted = inception_input(values, 65535.0)
    assert converted.shape == (1, 3, 1, values.shape[-1]) and converted.dtype == torch.uint8
    assert (converted[:, 0] != expected[:, 0]).sum() <= 2  # float32 vs float64 at exact integer boundaries
    assert torch.equal(converted[:, 0], converted[:, 2])


def test_inception_input_keeps_8_bit_rgb_as_it_is(photos):
    assert inception_input(photos, 255.0) is photos


def test_missing_weights_name_the_file_the_folder_and_the_url(torch_home):
    with pytest.raises(WeightsError) as info:
        resolve_inception()
    message = str(info.value)
    assert INCEPTION_FILE in message and str(torch_home) in message and INCEPTION_URL in message
    assert "\n" not in message


def test_a_given_path_without_the_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="--inception-weights has no file"):
        resolve_inception(tmp_path / "nowhere.pth")


def test_a_folder_or_the_cache_holding_the_file_is_found(tmp_path, torch_home, inception_weights):
    in_folder = install(inception_weights, tmp_path / "folder" / INCEPTION_FILE)
    assert resolve_inception(tmp_path / "folder") == in_folder
    cached = install(inception_weights, torch_home / INCEPTION_FILE)
    assert resolve_inception() == cached


def test_seeded_weights_under_torch_fidelitys_name_are_refused(torch_home, inception_weights):
    cached = install(inception_weights, torch_home / INCEPTION_FILE)
    with pytest.raises(WeightsError, match="its name says 6726825d") as info:
        verify_inception(resolve_inception())
    assert str(cached) in str(info.value)


def test_a_file_named_after_its_own_hash_is_accepted(tmp_path, inception_weights):
    named = hash_named(inception_weights, tmp_path, "my-inception")
    assert verify_inception(named).file.path == named


def test_a_truncated_file_is_refused(tmp_path, inception_weights):
    partial = tmp_path / "partial.pth"
    partial.write_bytes(inception_weights.read_bytes()[:1_000_000])
    with pytest.raises(WeightsError, match="truncated or not a PyTorch checkpoint"):
        verify_inception(partial)


@pytest.mark.parametrize(
    "state",
    [lambda: seeded_state_dict("squeeze", 0), lambda: {"fc.weight": torch.zeros(3)}],
    ids=["squeezenet", "one-tensor"],
)
def test_weights_of_another_architecture_are_refused(tmp_path, state):
    path = tmp_path / "other.pth"
    torch.save(state(), path)
    with pytest.raises(WeightsError, match="do not match torch-fidelity's Inception v3"):
        verify_inception(path)


def test_a_pickle_that_is_not_tensors_is_refused_without_running_it(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"fc.weight": "not a tensor"}, path)
    with pytest.raises(WeightsError, match="not a state dict of tensors"):
        verify_inception(path)


def test_bytes_that_changed_after_verification_are_refused(verified):
    damaged = InceptionWeights(verified.file, verified.data[:-1] + bytes([verified.data[-1] ^ 1]))
    with pytest.raises(WeightsError, match="checked at the start of the run"):
        build_inception(damaged, "torchmetrics", CPU)


def test_without_the_fid_extra_the_message_names_it(verified, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails
    with pytest.raises(UsageError, match=r"iqa-pipeline\[fid\]"):
        build_inception(verified, "torchmetrics", CPU)


def test_seeded_weights_are_reproducible_and_leave_the_global_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = seeded_inception_state_dict(seed=1)
    assert torch.equal(torch.rand(1), expected_next)
    second = seeded_inception_state_dict(seed=1)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
