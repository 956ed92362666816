"""LPIPS: Learned Perceptual Image Patch Similarity (Zhang et al., CVPR 2018), version 0.1.

The network is the `lpips` package's v0.1 network, declared module for module in
`pipeline.metrics.lpips_network` so that neither `lpips` nor torchvision is imported (1.1-1.3 s per run).
Its linear layers ship in the `lpips` wheel; the ImageNet backbone (AlexNet, VGG16 or SqueezeNet 1.1) is
torchvision's checkpoint, found in this order: an explicit path (`--lpips-weights`), torchvision's cache
(`$TORCH_HOME/hub/checkpoints`), a download. The backbone is loaded strictly, so a missing, partial or wrong
file stops the run instead of scoring with random weights. Build the network once per process with
`build_lpips_network` and pass it to `lpips`.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from pipeline.errors import WeightsError
from pipeline.metrics import winograd
from pipeline.metrics.checks import check_data_range, check_pair, check_same_shape, needs_grad
from pipeline.metrics.lpips_network import (
    BACKBONE_FILES,
    BACKBONE_NAMES,
    TORCHVISION_MODELS_URL,
    UNIT_EPS,
    LpipsNetwork,
    ScalingLayer,
    backbone_model,
    linear_layers_file,
    unit_normalize,
)

BACKBONES = BACKBONE_FILES  # LPIPS network name -> torchvision's checkpoint file

_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")
LAYER_STRIP_VALUES = 4_000_000
USE_WINOGRAD = True  # False: every convolution runs as its module (benchmarks, debugging)

_PREPARED: weakref.WeakKeyDictionary[torch.nn.Conv2d, _Prepared] = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()


def _check_net(net: str) -> None:
    if net not in BACKBONES:
        raise WeightsError(f"Unknown LPIPS network {net!r}; choose one of {sorted(BACKBONES)}.")


def backbone_url(net: str) -> str:
    """URL of torchvision's ImageNet checkpoint for the LPIPS backbone `net` ('alex', 'vgg', 'squeeze')."""
    return TORCHVISION_MODELS_URL + backbone_filename(net)


def backbone_filename(net: str) -> str:
    """File name of the backbone checkpoint, e.g. 'alexnet-owt-7be5be79.pth' for 'alex' (torchvision's
    `IMAGENET1K_V1` weights; tested against torchvision's own enums)."""
    _check_net(net)
    return BACKBONES[net]


def backbone_cache_path(net: str) -> Path:
    """Torchvision's cache file for the backbone: `torch.hub.get_dir()/checkpoints/<file>` ($TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_filename(net)


def _download(net: str, destination: Path) -> str | None:
    """Download the backbone into `destination`; return None on success, else why it failed."""
    match = _HASH_PREFIX.search(destination.name)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            backbone_url(net), str(destination), hash_prefix=match.group(1) if match else None, progress=False
        )
    except (OSError, RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def resolve_backbone(net: str, weights_path: str | None = None, *, allow_download: bool = True) -> Path:
    """Find the backbone checkpoint file for LPIPS network `net`.

    Args:
        net: 'alex', 'vgg' or 'squeeze'.
        weights_path: a checkpoint file, or a folder holding `backbone_filename(net)`; when given it is
            the only place looked at.
        allow_download: try torchvision's URL into the cache when the cache has no file.

    Returns:
        Path of an existing checkpoint file (its contents are checked by `build_lpips_network`).

    Raises:
        WeightsError: the file cannot be found or fetched; the message says which file, where to put it,
            and where to get it.
    """
    filename = backbone_filename(net)
    cache_path = backbone_cache_path(net)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if path.is_dir():
            path = path / filename
        if not path.is_file():
            raise WeightsError(
                f"LPIPS weights path {str(weights_path)!r} given with --lpips-weights has no file {path}; "
                f"pass the checkpoint {filename} itself or a folder holding it (get it from "
                f"{backbone_url(net)})."
            )
        return path
    if cache_path.is_file():
        return cache_path
    failure = "downloads are disabled (offline)"
    if allow_download:
        reason = _download(net, cache_path)
        if reason is None and cache_path.is_file():
            return cache_path
        failure = f"the download failed ({reason or 'no file was written'})"
    raise WeightsError(
        f"LPIPS backbone weights for net {net!r} are missing and {failure}: put the file {filename} into the "
        f"folder {cache_path.parent} (download it on a machine with internet from {backbone_url(net)}), "
        f"or pass --lpips-weights PATH with the file or its folder."
    )


def _load_state_dict(path: Path, what: str, fix: str) -> dict[str, Tensor]:
    """Read a state dict of tensors from `path`; `what` names the file in errors, `fix` says what to do."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{what} {path} cannot be read ({type(exc).__name__}: {exc}); "
            f"it is probably truncated or not a PyTorch checkpoint - {fix}."
        ) from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(
            f"{what} {path} is not a state dict of tensors (got {type(state).__name__}); {fix}."
        )
    return dict(state)


def _load_backbone(network: LpipsNetwork, net: str, path: Path) -> None:
    """Check `path` strictly against torchvision's architecture, then copy its features into the trunk."""
    state = _load_state_dict(
        path,
        "LPIPS backbone checkpoint",
        f"delete it and fetch {backbone_filename(net)} again from {backbone_url(net)}",
    )
    with torch.device("meta"):
        reference = backbone_model(net)
    try:
        reference.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"LPIPS backbone checkpoint {path} does not match torchvision's {BACKBONE_NAMES[net]} "
            f"for net {net!r}: {exc}. Use the file {backbone_filename(net)} from {backbone_url(net)}."
        ) from exc
    features = reference.features.state_dict()
    trunk_state = {}
    for key in network.net.state_dict():
        _, feature_key = key.split(".", 1)
        trunk_state[key] = features[feature_key]
    try:
        network.net.load_state_dict(trunk_state, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"LPIPS backbone from {path} cannot be copied into the {net!r} trunk: {exc}"
        ) from exc


def _load_linear_layers(network: LpipsNetwork, net: str) -> None:
    """Load the linear layers shipped in the `lpips` wheel, requiring exactly the keys the network has."""
    shipped = linear_layers_file(net)
    if shipped is None:
        raise WeightsError(
            "LPIPS needs the linear layers that ship in the `lpips` package, which is not installed; "
            "install it (pip install lpips)."
        )
    state = _load_state_dict(shipped, "LPIPS linear-layer file", "reinstall the `lpips` package")
    expected = {key for key in network.state_dict() if re.match(r"lin\d+\.", key)}
    if set(state) != expected:
        raise WeightsError(
            f"LPIPS linear-layer file {shipped} has keys {sorted(state)}, expected {sorted(expected)}; "
            "reinstall the `lpips` package."
        )
    network.load_state_dict(state, strict=False, assign=True)


def _check_every_tensor_loaded(network: torch.nn.Module, net: str, path: Path) -> None:
    """The network is built on the meta device, so a tensor that no file filled would have no values."""
    unloaded = [
        name for name, tensor in [*network.named_parameters(), *network.named_buffers()] if tensor.is_meta
    ]
    if unloaded:
        raise WeightsError(
            f"LPIPS {net!r} network has tensors that neither {path} nor the `lpips` wheel provided: "
            f"{unloaded[:5]}. Use the file {backbone_filename(net)} from {backbone_url(net)}."
        )


def build_lpips_network(
    net: str = "alex",
    weights_path: str | None = None,
    *,
    device: str | torch.device = "cpu",
    allow_download: bool = True,
) -> LpipsNetwork:
    """Build the LPIPS v0.1 network once, with strictly loaded weights.

    Args:
        net: backbone, 'alex' (default), 'vgg' or 'squeeze'.
        weights_path: backbone checkpoint file or folder (`--lpips-weights`); see `resolve_backbone`.
        device: where the network lives.
        allow_download: allow fetching the backbone into torchvision's cache when it is missing.

    Returns:
        `LpipsNetwork` (the modules of `lpips.LPIPS(net=net, version="0.1")`) in eval mode, parameters
        frozen (`requires_grad=False`), on `device`.

    Raises:
        WeightsError: the backbone or the linear layers are missing, unreadable or do not match.
    """
    path = resolve_backbone(net, weights_path, allow_download=allow_download)
    with torch.device("meta"):
        network = LpipsNetwork(net)
    network.scaling_layer = ScalingLayer()
    _load_linear_layers(network, net)
    _load_backbone(network, net, path)
    _check_every_tensor_loaded(network, net, path)
    network.eval().requires_grad_(False)
    return network.to(device=device, memory_format=torch.channels_last)


def lpips(x: Tensor, y: Tensor, *, data_range: float, network: torch.nn.Module) -> Tensor:
    """LPIPS distance per image pair; lower is more similar.

    Differentiable in `x` and `y` (usable as a loss); wrap calls in `torch.inference_mode()` for scoring.

    Args:
        x, y: (N, C, H, W) images with values in [0, data_range], C = 1 (replicated to RGB) or 3.
        data_range: the peak value (255 for 8-bit, 1.0 for unit floats).
        network: from `build_lpips_network`, on the device of `x`.

    Returns:
        (N,) LPIPS v0.1 distances.

    Example:
        >>> net = build_lpips_network("alex", allow_download=False)  # doctest: +SKIP
        >>> x = torch.rand(2, 3, 64, 64)
        >>> lpips(x, x, data_range=1.0, network=net).shape  # doctest: +SKIP
        torch.Size([2])
    """
    check_pair(x, y)
    return lpips_of_stored_values(x, y, data_range=data_range, network=network)


def lpips_of_stored_values(x: Tensor, y: Tensor, *, data_range: float, network: torch.nn.Module) -> Tensor:
    """`lpips` for images of any dtype, e.g. the stored uint8 values: (N, C, H, W) x2 -> (N,).

    Integer images are converted straight into the float32 network input, so no other float copy of the
    pair is made (what bounds memory on large images when scoring).
    """
    check_same_shape(x, y)
    data_range = check_data_range(data_range)
    channels = x.shape[1]
    if x.dim() != 4 or channels not in (1, 3):
        raise ValueError(f"LPIPS needs (N, C, H, W) images with 1 or 3 channels, got shape {tuple(x.shape)}.")
    if channels == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    dtype = next(network.parameters()).dtype
    distance = layerwise_distance(
        network, _trunk_input(network, x, data_range, dtype), _trunk_input(network, y, data_range, dtype)
    )
    return distance.reshape(x.shape[0])


def _trunk_input(network: LpipsNetwork, x: Tensor, data_range: float, dtype: torch.dtype) -> Tensor:
    """[0, data_range] -> what the trunk sees: LPIPS's [-1, 1] mapping, then its ScalingLayer.

    Without gradients both affine maps are one per-channel `x * gain + offset` written straight into a fresh
    channels-last copy in the network's dtype (the layout the convolutions run fastest in on CPU).
    """
    layer = network.scaling_layer
    if needs_grad(x):
        return layer(2 * x.to(dtype) / data_range - 1)
    gain = 2 / (data_range * layer.scale)
    offset = -(1 + layer.shift) / layer.scale
    scaled = torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=torch.channels_last)
    return torch.addcmul(offset, x, gain, out=scaled)


def layerwise_distance(network: LpipsNetwork, x: Tensor, y: Tensor) -> Tensor:
    """The LPIPS v0.1 forward pass after the ScalingLayer, one backbone layer at a time: (N, 3, H, W) trunk
    inputs x2 (see `_trunk_input`) -> (N, 1, 1, 1).

    The same operations in the same order as `lpips.LPIPS.forward`, but module by module, so each image's
    activation is freed as soon as the next one exists, and the per-pixel distance is reduced in row strips:
    peak memory is about three activations of the largest layer instead of all layers of both images.
    Without gradients on CPU, AlexNet's 5x5 and 3x3 convolutions (VGG's from 256 channels) run as Winograd
    F(4x4, r x r) (`pipeline.metrics.winograd`): 1.5x faster for a 512 x 512 pair on one core, within
    1e-8 of the direct convolutions' distance on photos.
    """
    total: Tensor | int = 0
    fast = USE_WINOGRAD and not needs_grad(x, y)
    for index in range(network.L):
        layer = getattr(network.net, f"slice{index + 1}")
        x = _run_slice(layer, x, fast=fast)
        y = _run_slice(layer, y, fast=fast)
        total = total + _layer_distance(network.lins[index], x, y)
    return total


def trunk_features(network: LpipsNetwork, x: Tensor) -> list[Tensor]:
    """The backbone's outputs at the L LPIPS layers for trunk input x (after the ScalingLayer), as
    `network.net(x)` gives them: (N, 3, H, W) -> L tensors (N, C_l, H_l, W_l); Winograd convolutions on
    CPU when no gradient is needed, like `layerwise_distance`."""
    fast = USE_WINOGRAD and not needs_grad(x)
    features = []
    for index in range(network.L):
        x = _run_slice(getattr(network.net, f"slice{index + 1}"), x, fast=fast)
        features.append(x)
    return features


def _run_slice(layer: torch.nn.Sequential, x: Tensor, *, fast: bool) -> Tensor:
    """`layer(x)`; when `fast` (no gradient needed for either image of the pair), the convolutions that
    Winograd runs faster on float32 CPU tensors (`_winograd_conv`) go through it with the ReLU after them."""
    modules = list(layer)
    index = 0
    while index < len(modules):
        prepared = _winograd_conv(modules[index], x) if fast else None
        if prepared is None:
            x = modules[index](x)
            index += 1
            continue
        relu = index + 1 < len(modules) and type(modules[index + 1]) is torch.nn.ReLU
        x = prepared(x, relu=relu)
        index += 1 + relu
    return x


def _winograd_conv(module: torch.nn.Module, x: Tensor) -> winograd.WinogradConv2d | None:
    """The Winograd form of `module` for input `x`, prepared once and again whenever its weights change
    (moved with `.to(...)`, replaced, edited in place); None where `module` must run itself: a convolution
    Winograd does not support or pay off for, CUDA or another dtype, weights that record gradients."""
    if not (winograd.supports(module) and winograd.pays_off(module)):
        return None
    if x.device.type != "cpu" or x.dtype != torch.float32 or module.weight.device != x.device:
        return None
    if torch.is_grad_enabled() and module.weight.requires_grad:
        return None
    with _PREPARED_LOCK:
        cached = _PREPARED.get(module)
        if cached is None or not cached.matches(module):
            cached = _Prepared.of(module)
            _PREPARED[module] = cached
    return cached.conv


@dataclass(frozen=True)
class _Prepared:
    """A prepared convolution and what identifies the weights it was made from: the tensor objects (weakly),
    their storage and their in-place version counters."""

    tensors: tuple[weakref.ref, ...]
    key: tuple
    conv: winograd.WinogradConv2d

    @staticmethod
    def _tensors(conv: torch.nn.Conv2d) -> list[Tensor]:
        return [conv.weight] if conv.bias is None else [conv.weight, conv.bias]

    @staticmethod
    def _key(tensors: list[Tensor]) -> tuple:
        return tuple(
            (t.data_ptr(), str(t.device), t.dtype, tuple(t.shape), 0 if t.is_inference() else t._version)
            for t in tensors
        )

    @classmethod
    def of(cls, conv: torch.nn.Conv2d) -> _Prepared:
        tensors = cls._tensors(conv)
        refs = tuple(weakref.ref(t) for t in tensors)
        return cls(refs, cls._key(tensors), winograd.WinogradConv2d.from_conv(conv))

    def matches(self, conv: torch.nn.Conv2d) -> bool:
        tensors = self._tensors(conv)
        same_objects = len(tensors) == len(self.tensors) and all(
            ref() is t for ref, t in zip(self.tensors, tensors, strict=True)
        )
        return same_objects and self._key(tensors) == self.key


def _layer_distance(linear: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Spatial mean of lin((unit(x) - unit(y))^2) over (N, C, H, W) activations, in strips of rows.

    Without gradients the 1x1 `lin` layer is applied after the spatial mean (it is linear), to per-channel
    sums accumulated in float64, which skips two full-size passes per layer.
    """
    rows = max(1, LAYER_STRIP_VALUES // max(1, x[:, :, 0].numel()))
    if needs_grad(x, y):
        if rows >= x.shape[2]:
            return linear(_squared_unit_difference(x, y)).mean(dim=(2, 3), keepdim=True)
        strips = [
            linear(
                _squared_unit_difference(x[:, :, start : start + rows], y[:, :, start : start + rows])
            ).sum(dim=(2, 3), keepdim=True, dtype=torch.float64)
            for start in range(0, x.shape[2], rows)
        ]
        return (torch.stack(strips).sum(dim=0) / (x.shape[2] * x.shape[3])).to(x.dtype)
    sums = sum(
        _squared_unit_difference_sums(x[:, :, start : start + rows], y[:, :, start : start + rows])
        for start in range(0, x.shape[2], rows)
    )
    weights = next(m for m in linear.modules() if isinstance(m, torch.nn.Conv2d)).weight
    per_channel_mean = sums / (x.shape[2] * x.shape[3])
    return (per_channel_mean @ weights.flatten().to(torch.float64)).to(x.dtype).view(-1, 1, 1, 1)


def _squared_unit_difference(x: Tensor, y: Tensor) -> Tensor:
    return (unit_normalize(x) - unit_normalize(y)) ** 2


def _squared_unit_difference_sums(x: Tensor, y: Tensor) -> Tensor:
    """Per-channel spatial sums of (unit(x) - unit(y))^2 in float64: (N, C, H, W) x2 -> (N, C)."""
    inverse_x = torch.linalg.vector_norm(x, dim=1, keepdim=True).add_(UNIT_EPS).reciprocal_()
    inverse_y = torch.linalg.vector_norm(y, dim=1, keepdim=True).add_(UNIT_EPS).reciprocal_()
    difference = torch.mul(x, inverse_x).addcmul_(y, inverse_y, value=-1)
    return difference.square_().sum(dim=(2, 3), dtype=torch.float64)
