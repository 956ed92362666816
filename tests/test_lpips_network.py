"""The LPIPS network declared in `pipeline.metrics.lpips_network` has the modules of `lpips.LPIPS`.

The value tests against the `lpips` package are in test_perceptual.py (AlexNet and SqueezeNet on photos); here
every backbone (VGG16 too, whose checkpoint is too large to write in a test) is compared module by module
with torchvision's model and the package's network, built on the meta device.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import lpips as lpips_package
import pytest
import torch
import torchvision

from pipeline.metrics.lpips_network import (
    LAYER_CHANNELS,
    SCALE,
    SHIFT,
    LpipsNetwork,
    ScalingLayer,
    backbone_model,
    unit_normalize,
)
from pipeline.metrics.lpips_weights import BACKBONE_FILES, linear_layers_file

TORCHVISION = {
    "alex": (torchvision.models.alexnet, torchvision.models.AlexNet_Weights.IMAGENET1K_V1),
    "vgg": (torchvision.models.vgg16, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    "squeeze": (torchvision.models.squeezenet1_1, torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1),
}
NETS = sorted(TORCHVISION)


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in module.state_dict().items()}


def described(module: torch.nn.Module) -> list[str]:
    """Every leaf module with its settings (repr), in order: what the forward pass runs."""
    return [
        f"{name.split('.')[-1]}:{leaf!r}"
        for name, leaf in module.named_modules()
        if not list(leaf.children())
    ]


def package_network(net: str) -> torch.nn.Module:
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", UserWarning)
        return lpips_package.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)


@pytest.mark.parametrize("net", NETS)
def test_backbone_checkpoint_layout_is_torchvisions(net: str) -> None:
    build, weights = TORCHVISION[net]
    assert BACKBONE_FILES[net] == weights.url.rsplit("/", 1)[-1]
    with torch.device("meta"):
        ours, theirs = backbone_model(net), build(weights=None)
    assert shapes(ours) == shapes(theirs)
    assert described(ours.features) == described(theirs.features)


@pytest.mark.parametrize("net", NETS)
def test_network_modules_and_keys_are_the_lpips_packages(net: str) -> None:
    with torch.device("meta"):
        ours = LpipsNetwork(net)
    reference = package_network(net)
    assert ours.L == reference.L == len(LAYER_CHANNELS[net])
    expected = {key: shape for key, shape in shapes(reference).items() if not key.startswith("lins.")}
    assert shapes(ours) == expected
    for index in range(ours.L):
        ours_slice = getattr(ours.net, f"slice{index + 1}")
        reference_slice = getattr(reference.net, f"slice{index + 1}")
        assert [name for name, _ in ours_slice.named_children()] == [
            n for n, _ in reference_slice.named_children()
        ]
        assert described(ours_slice) == described(reference_slice)
        assert described(ours.lins[index]) == described(reference.lins[index])
    shipped = linear_layers_file(net)
    assert shipped is not None and shipped.is_file()
    assert set(torch.load(shipped, map_location="cpu", weights_only=True)) == {
        key for key in expected if key.startswith("lin")
    }


def test_scaling_and_normalisation_are_the_packages() -> None:
    scaling = ScalingLayer()
    reference = lpips_package.ScalingLayer()
    torch.testing.assert_close(scaling.shift, reference.shift, rtol=0, atol=0)
    torch.testing.assert_close(scaling.scale, reference.scale, rtol=0, atol=0)
    assert scaling.shift.flatten().tolist() == pytest.approx(SHIFT) and len(SCALE) == 3
    features = torch.randn(2, 64, 5, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        unit_normalize(features), lpips_package.normalize_tensor(features), rtol=0, atol=0
    )


@pytest.mark.slow
def test_scoring_lpips_imports_neither_torchvision_nor_the_lpips_package() -> None:
    """Building the network and scoring with it never imports them (importing torchvision is slow)."""
    code = (
        "import sys, torch\n"
        "from pipeline.metrics.lpips_network import LpipsNetwork\n"
        "from pipeline.metrics import lpips_weights\n"
        "import pipeline.worker\n"
        "with torch.device('meta'):\n"
        "    LpipsNetwork('squeeze')\n"
        "lpips_weights.backbone_cache_path('alex')\n"
        "print(sorted(m for m in ('torchvision', 'lpips') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
