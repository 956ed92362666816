"""LPIPS distance: Learned Perceptual Image Patch Similarity (Zhang et al., CVPR 2018), version 0.1.

Build the network once per process with `pipeline.metrics.lpips_weights.build_lpips_network` and pass it in.
`layerwise_distance` computes what `LpipsNetwork.forward` computes, one backbone layer at a time with bounded
memory (tested equal).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.metrics.checks import (
    accumulation_dtype,
    check_data_range,
    check_pair,
    check_same_shape,
    needs_grad,
)
from pipeline.metrics.lpips_network import UNIT_EPS, LpipsNetwork, unit_normalize

LAYER_STRIP_VALUES = 4_000_000  # activation values per strip when the per-pixel distance is reduced


def lpips(x: Tensor, y: Tensor, *, data_range: float, network: LpipsNetwork) -> Tensor:
    """LPIPS distance per image pair; lower is more similar.

    Differentiable in `x` and `y` (usable as a loss); wrap calls in `torch.inference_mode()` for scoring.

    Args:
        x, y: (N, C, H, W) images with values in [0, data_range], C = 1 (replicated to RGB) or 3.
        data_range: the peak value (255 for 8-bit, 1.0 for unit floats).
        network: from `build_lpips_network`, on the device of `x`.

    Returns:
        (N,) LPIPS v0.1 distances.

    Example (with a stand-in backbone file; real runs use torchvision's checkpoint):
        >>> import tempfile
        >>> from pipeline.metrics.lpips_network import backbone_model
        >>> from pipeline.metrics.lpips_weights import build_lpips_network
        >>> checkpoint = tempfile.mkdtemp() + "/stand-in-alexnet.pth"
        >>> torch.save(backbone_model("alex").state_dict(), checkpoint)
        >>> network = build_lpips_network("alex", checkpoint, allow_download=False)
        >>> x = torch.rand(2, 3, 64, 64)
        >>> distance = lpips(x, x.flip(-1), data_range=1.0, network=network)
        >>> distance.shape, bool((distance > 0).all())
        (torch.Size([2]), True)
    """
    check_pair(x, y)
    return lpips_of_stored_values(x, y, data_range=data_range, network=network)


def lpips_of_stored_values(x: Tensor, y: Tensor, *, data_range: float, network: LpipsNetwork) -> Tensor:
    """`lpips` for images of any dtype, e.g. the stored uint8 values: (N, C, H, W) x2 -> (N,).

    Integer images are converted straight into the float network input, so no other float copy of the pair
    is made. See `lpips` for an example.
    """
    check_same_shape(x, y)
    data_range = check_data_range(data_range)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"LPIPS needs (N, C, H, W) images with 1 or 3 channels, got shape {tuple(x.shape)}.")
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    dtype = next(network.parameters()).dtype
    distance = layerwise_distance(
        network, trunk_input(network, x, data_range, dtype), trunk_input(network, y, data_range, dtype)
    )
    return distance.reshape(x.shape[0])


def trunk_input(network: LpipsNetwork, x: Tensor, data_range: float, dtype: torch.dtype) -> Tensor:
    """[0, data_range] -> what the trunk sees: LPIPS's [-1, 1] mapping, then its ScalingLayer, (N, 3, H, W).

    Without gradients both affine maps are one per-channel `x * gain + offset` written into a channels-last
    tensor of the network's dtype.
    """
    layer = network.scaling_layer
    if needs_grad(x):
        return layer(2 * x.to(dtype) / data_range - 1)
    gain = 2 / (data_range * layer.scale)
    offset = -(1 + layer.shift) / layer.scale
    scaled = torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=torch.channels_last)
    return torch.addcmul(offset, x, gain, out=scaled)


def layerwise_distance(network: LpipsNetwork, x: Tensor, y: Tensor) -> Tensor:
    """The LPIPS v0.1 forward pass after the ScalingLayer, one slice of the backbone at a time.

    Args:
        network: the LPIPS network.
        x, y: (N, 3, H, W) trunk inputs (`trunk_input`).

    Returns:
        (N, 1, 1, 1) distances. Each image's activation is freed as soon as the next one exists, and the
        per-pixel distance is reduced in strips of rows.

    Example (a stand-in backbone file; `trunk_input` maps [0, R] images to the trunk's input):
        >>> import tempfile
        >>> from pipeline.metrics.lpips_network import backbone_model
        >>> from pipeline.metrics.lpips_weights import build_lpips_network
        >>> checkpoint = tempfile.mkdtemp() + "/stand-in-squeezenet.pth"
        >>> torch.save(backbone_model("squeeze").state_dict(), checkpoint)
        >>> network = build_lpips_network("squeeze", checkpoint)
        >>> x, y = (trunk_input(network, torch.rand(1, 3, 48, 48), 1.0, torch.float32) for _ in range(2))
        >>> layerwise_distance(network, x, y).shape, len(trunk_features(network, x))
        (torch.Size([1, 1, 1, 1]), 7)
    """
    total: Tensor | int = 0
    for index, linear in enumerate(network.lins):
        layer = getattr(network.net, f"slice{index + 1}")
        x, y = layer(x), layer(y)
        total = total + _layer_distance(linear, x, y)
    return total


def trunk_features(network: LpipsNetwork, x: Tensor) -> list[Tensor]:
    """The backbone's outputs at the L LPIPS layers: (N, 3, H, W) trunk input -> L (N, C_l, H_l, W_l)."""
    return network.net(x)


def _layer_distance(linear: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Spatial mean of lin((unit(x) - unit(y))^2) over (N, C, H, W) activations, in strips of rows.

    Without gradients the 1x1 `lin` layer is applied after the spatial mean (it is linear), to per-channel
    sums accumulated in float64 (float32 on MPS: `accumulation_dtype`).
    """
    rows = max(1, LAYER_STRIP_VALUES // max(1, x[:, :, 0].numel()))
    strips = range(0, x.shape[2], rows)
    dtype = accumulation_dtype(x.device)
    if needs_grad(x, y):
        sums = [
            linear(_squared_unit_difference(x[:, :, s : s + rows], y[:, :, s : s + rows])).sum(
                dim=(2, 3), keepdim=True, dtype=dtype
            )
            for s in strips
        ]
        return (torch.stack(sums).sum(dim=0) / (x.shape[2] * x.shape[3])).to(x.dtype)
    sums = sum(_squared_unit_difference_sums(x[:, :, s : s + rows], y[:, :, s : s + rows]) for s in strips)
    weights = next(m for m in linear.modules() if isinstance(m, torch.nn.Conv2d)).weight
    per_channel_mean = sums / (x.shape[2] * x.shape[3])
    return (per_channel_mean @ weights.flatten().to(dtype)).to(x.dtype).view(-1, 1, 1, 1)


def _squared_unit_difference(x: Tensor, y: Tensor) -> Tensor:
    return (unit_normalize(x) - unit_normalize(y)) ** 2


def _squared_unit_difference_sums(x: Tensor, y: Tensor) -> Tensor:
    """Per-channel spatial sums of (unit(x) - unit(y))^2 (`accumulation_dtype`): (N, C, H, W) x2 -> (N, C)."""
    inverse_x = torch.linalg.vector_norm(x, dim=1, keepdim=True).add_(UNIT_EPS).reciprocal_()
    inverse_y = torch.linalg.vector_norm(y, dim=1, keepdim=True).add_(UNIT_EPS).reciprocal_()
    difference = torch.mul(x, inverse_x).addcmul_(y, inverse_y, value=-1)
    return difference.square_().sum(dim=(2, 3), dtype=accumulation_dtype(x.device))
