"""LPIPS weights: find the backbone checkpoint, load both weight files strictly, build the network once.

The linear layers ship in the `lpips` wheel (`linear_layers_file`, located without importing the package);
the ImageNet backbone (AlexNet, VGG16 or SqueezeNet 1.1) is torchvision's checkpoint, found in this order: an
explicit path (`--lpips-weights`), torchvision's cache (`$TORCH_HOME/hub/checkpoints`), a download. The
network is built on the meta device and every tensor must come from a file, so a missing, partial or wrong
file stops the run instead of scoring with random weights.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from pipeline.choices import LpipsNet
from pipeline.errors import WeightsError
from pipeline.metrics.lpips_network import BACKBONE_NAMES, LpipsNetwork, ScalingLayer, backbone_model

TORCHVISION_MODELS_URL = "https://download.pytorch.org/models/"
# torchvision's IMAGENET1K_V1 checkpoint file of each backbone (tested against torchvision's enums)
BACKBONE_FILES: dict[str, str] = {
    LpipsNet.ALEX.value: "alexnet-owt-7be5be79.pth",
    LpipsNet.VGG.value: "vgg16-397923af.pth",
    LpipsNet.SQUEEZE.value: "squeezenet1_1-b8a52dc0.pth",
}
_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")


def backbone_filename(net: str) -> str:
    """File name of the backbone checkpoint of LPIPS network `net`.

    Example:
        >>> backbone_filename("alex")
        'alexnet-owt-7be5be79.pth'
    """
    if net not in BACKBONE_FILES:
        raise WeightsError(f"Unknown LPIPS network {net!r}; choose one of {', '.join(LpipsNet.values())}.")
    return BACKBONE_FILES[net]


def backbone_url(net: str) -> str:
    """URL of torchvision's ImageNet checkpoint for the LPIPS backbone `net`.

    Example:
        >>> backbone_url("vgg")
        'https://download.pytorch.org/models/vgg16-397923af.pth'
    """
    return TORCHVISION_MODELS_URL + backbone_filename(net)


def backbone_cache_path(net: str) -> Path:
    """Torchvision's cache file for the backbone: `torch.hub.get_dir()/checkpoints/<file>` ($TORCH_HOME).

    Example:
        >>> backbone_cache_path("squeeze").name
        'squeezenet1_1-b8a52dc0.pth'
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_filename(net)


def linear_layers_file(net: str) -> Path | None:
    """The wheel file `lpips/weights/v0.1/<net>.pth`, located without importing `lpips`; None when the
    package is not installed.

    Example:
        >>> linear_layers_file("alex").parts[-3:]
        ('weights', 'v0.1', 'alex.pth')
    """
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / f"{net}.pth"


def checkpoint_identity(path: str | Path) -> str:
    """Name, size and modification time of a checkpoint file: a file replaced or edited is another checkpoint.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "alexnet-owt-7be5be79.pth"
        >>> _ = path.write_bytes(b"0123")
        >>> checkpoint_identity(path).split(":")[:2]
        ['alexnet-owt-7be5be79.pth', '4']
    """
    stat = Path(path).stat()
    return f"{Path(path).name}:{stat.st_size}:{stat.st_mtime_ns}"


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

    Example:
        >>> resolve_backbone("alex", "/nowhere/alexnet.pth")
        Traceback (most recent call last):
        ...
        pipeline.errors.WeightsError: LPIPS weights path '/nowhere/alexnet.pth' given with --lpips-weights ...
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
    trunk_state = {key: features[key.split(".", 1)[1]] for key in network.net.state_dict()}
    network.net.load_state_dict(trunk_state, strict=True, assign=True)


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
        frozen (`requires_grad=False`), channels-last, on `device`.

    Raises:
        WeightsError: the backbone or the linear layers are missing, unreadable or do not match.

    Example (a stand-in checkpoint; real runs use torchvision's file from the cache or `--lpips-weights`):
        >>> import tempfile
        >>> from pipeline.metrics.lpips_network import backbone_model
        >>> checkpoint = tempfile.mkdtemp() + "/stand-in-squeezenet.pth"
        >>> torch.save(backbone_model("squeeze").state_dict(), checkpoint)
        >>> network = build_lpips_network("squeeze", checkpoint)
        >>> network.pnet_type, network.training
        ('squeeze', False)
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
