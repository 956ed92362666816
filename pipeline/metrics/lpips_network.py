"""The LPIPS v0.1 network (Zhang et al., CVPR 2018) as the `lpips` package lays it out, without importing it.

The modules have `lpips.LPIPS(net=..., version="0.1")`'s names, so its state-dict keys, layer slices and
values are those of the package (tested against it on the same weights), without importing torchvision or
`lpips` at run time:

* the backbones' `features` as torchvision numbers them (AlexNet, VGG16, SqueezeNet 1.1) and their
  classifiers, only to check a torchvision checkpoint strictly (`backbone_model`);
* the trunk `net` with the LPIPS slices `slice1..sliceL` of those features, `scaling_layer`, and the 1x1
  linear layers `lin0..lin{L-1}` (`lins` lists them).

`LpipsNetwork.forward` is the reference computation; weights come from `pipeline.metrics.lpips_weights`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

BACKBONE_NAMES: dict[str, str] = {"alex": "AlexNet", "vgg": "VGG16", "squeeze": "SqueezeNet 1.1"}
LAYER_CHANNELS: dict[str, tuple[int, ...]] = {
    "alex": (64, 192, 384, 256, 256),
    "vgg": (64, 128, 256, 512, 512),
    "squeeze": (64, 128, 256, 384, 384, 512, 512),
}
# [start, stop) indices of `features` in each LPIPS slice, as lpips.pretrained_networks cuts them
SLICES: dict[str, tuple[tuple[int, int], ...]] = {
    "alex": ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)),
    "vgg": ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)),
    "squeeze": ((0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 12), (12, 13)),
}
SHIFT = (-0.030, -0.088, -0.188)  # ScalingLayer: (x - shift) / scale, per RGB channel
SCALE = (0.458, 0.448, 0.450)
UNIT_EPS = 1e-10  # lpips.normalize_tensor's eps
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 expansions concatenated on channels."""

    def __init__(self, inputs: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inputs, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(N, inputs, H, W) -> (N, expand1x1 + expand3x3, H, W)."""
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        channels = int(item)
    return nn.Sequential(*layers)


def _squeezenet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=3, stride=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(64, 16, 64, 64),
        Fire(128, 16, 64, 64),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(128, 32, 128, 128),
        Fire(256, 32, 128, 128),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(256, 48, 192, 192),
        Fire(384, 48, 192, 192),
        Fire(384, 64, 256, 256),
        Fire(512, 64, 256, 256),
    )


def _classifier(net: str) -> nn.Sequential:
    """The ImageNet classifier of a torchvision checkpoint: read only to check the file is complete."""
    if net == "alex":
        return nn.Sequential(
            nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096),
            nn.ReLU(), nn.Linear(4096, 1000),
        )  # fmt: skip
    if net == "vgg":
        return nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
            nn.Dropout(), nn.Linear(4096, 1000),
        )  # fmt: skip
    return nn.Sequential(nn.Dropout(), nn.Conv2d(512, 1000, kernel_size=1), nn.ReLU())


_FEATURES = {"alex": _alexnet_features, "vgg": _vgg16_features, "squeeze": _squeezenet_features}


def backbone_model(net: str) -> nn.Module:
    """torchvision's model for `net` as its checkpoint names it: `features.*` and `classifier.*`.

    Example:
        >>> sorted(backbone_model("alex").state_dict())[:2]
        ['classifier.1.bias', 'classifier.1.weight']
    """
    model = nn.Module()
    model.features = _FEATURES[net]()
    model.classifier = _classifier(net)
    return model


class ScalingLayer(nn.Module):
    """LPIPS's fixed input normalisation: (x - shift) / scale per RGB channel, x in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None])

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale


class LinearLayer(nn.Module):
    """One learned 1x1 layer: `model` = (Dropout, Conv2d(C, 1, 1, bias=False)), as in the wheel's files."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Trunk(nn.Module):
    """The backbone's features cut into the LPIPS slices `slice1..sliceL` (original indices kept)."""

    def __init__(self, net: str) -> None:
        super().__init__()
        features = _FEATURES[net]()
        self.N_slices = len(SLICES[net])
        for number, (start, stop) in enumerate(SLICES[net], start=1):
            part = nn.Sequential()
            for index in range(start, stop):
                part.add_module(str(index), features[index])
            setattr(self, f"slice{number}", part)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) trunk input -> the L slice outputs."""
        outputs = []
        for number in range(1, self.N_slices + 1):
            x = getattr(self, f"slice{number}")(x)
            outputs.append(x)
        return outputs


class LpipsNetwork(nn.Module):
    """LPIPS v0.1 with the `lpips.LPIPS` module names; build it with `lpips_weights.build_lpips_network`.

    `forward(x, y)` takes images in [-1, 1] (like `lpips.LPIPS`) and returns (N, 1, 1, 1) distances.
    """

    def __init__(self, net: str) -> None:
        super().__init__()
        self.pnet_type = net
        self.version = "0.1"
        self.chns = list(LAYER_CHANNELS[net])
        self.L = len(self.chns)
        self.scaling_layer = ScalingLayer()
        self.net = Trunk(net)
        for index, channels in enumerate(self.chns):
            setattr(self, f"lin{index}", LinearLayer(channels))

    @property
    def lins(self) -> list[LinearLayer]:
        """The linear layers in layer order (attributes `lin0..`, so the state-dict keys are the wheel's)."""
        return [getattr(self, f"lin{index}") for index in range(self.L)]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """(N, 3, H, W) images in [-1, 1] x2 -> (N, 1, 1, 1) distances, as `lpips.LPIPS` gives them."""
        features_x = self.net(self.scaling_layer(x))
        features_y = self.net(self.scaling_layer(y))
        total: Tensor | int = 0
        for linear, a, b in zip(self.lins, features_x, features_y, strict=True):
            difference = (unit_normalize(a) - unit_normalize(b)) ** 2
            total = total + linear(difference).mean(dim=(2, 3), keepdim=True)
        return total


def unit_normalize(x: Tensor, eps: float = UNIT_EPS) -> Tensor:
    """`lpips.normalize_tensor`: x / (||x||_2 over channels + eps), (N, C, H, W) -> same.

    Example:
        >>> unit_normalize(torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)).flatten()
        tensor([0.6000, 0.8000])
    """
    return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)
