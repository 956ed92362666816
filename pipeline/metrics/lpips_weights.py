"""LPIPS weights: find the backbone checkpoint, verify it, load both weight files strictly, build the network.

The linear layers ship in the `lpips` wheel (`linear_layers_file`, located without importing the package);
the ImageNet backbone (AlexNet, VGG16 or SqueezeNet 1.1) is torchvision's checkpoint, found in this order: an
explicit path (`--lpips-weights`), torchvision's cache (`$TORCH_HOME/hub/checkpoints`), a download.

A backbone file whose name carries a hash prefix (torchvision's `<name>-<hex>.pth`) must hash to it; a file
under any other name is taken as the user's own weights. `verify_backbone` checks this and loads the file
strictly, once, on the client before a run starts; it returns a `BackboneFile` (path, sha256, size,
modification time), which the manifest records. A run on Dask workers ships `BackboneWeights` to them (the
backbone's `features` tensors, the only part LPIPS uses, with their digest), so workers never open the
client's file; a direct call builds from the `BackboneFile`, checking only that the file kept its size and
time. The network is built on the meta device and every tensor must come from a file or the shipped tensors,
so a missing, partial or wrong file stops the run instead of scoring with random weights.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
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
_NAME_HASH = re.compile(r"-([0-9a-f]{8,})$")  # torchvision's `<name>-<sha256 prefix>`, on the file's stem
REASON_CHARS = 300  # the most characters of a library's error quoted in a one-line message


@dataclass(frozen=True)
class BackboneFile:
    """A backbone checkpoint checked on the client: where it is (absolute), its sha256 (hex), and the size
    (bytes) and modification time (ns) it had then, by which a worker recognises the same file without hashing
    it again."""

    path: Path
    sha256: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, eq=False)
class BackboneWeights:
    """The tensors of a verified backbone that the LPIPS network uses, for a worker that cannot read the file.

    `features`: the backbone's `features.*` tensors as torchvision names them, without the prefix (the trunk
    of LPIPS is cut from them). `file`: the checked file they were loaded from (path and sha256, as the
    manifest records them). `digest`: `tensors_sha256(features)` on the client, computed again by the worker
    before it builds the network.
    """

    net: str
    file: BackboneFile
    features: dict[str, Tensor]
    digest: str

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data shipped."""
        return sum(tensor.nbytes for tensor in self.features.values())


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


def name_hash_prefix(path: str | Path) -> str | None:
    """The sha256 prefix a checkpoint's name claims by torchvision's convention: the 8 or more lowercase hex
    digits after the last '-' of the file's stem; None for a name without one.

    Example:
        >>> name_hash_prefix("alexnet-owt-7be5be79.pth"), name_hash_prefix("alexnet-seeded.pth")
        ('7be5be79', None)
    """
    match = _NAME_HASH.search(Path(path).stem)
    return match.group(1) if match else None


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's sha256 (hex); `size` and `mtime_ns` are part of the cache key, so an edited file is hashed
    again while an unchanged one is hashed once per process."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def one_line(exc: BaseException) -> str:
    """An exception as `Type: first sentence` on one line, at most `REASON_CHARS` characters (torch's load
    errors go on with advice for developers, such as retrying with `weights_only=False`).

    Example:
        >>> one_line(RuntimeError("failed finding central directory. This is an internal miniz error."))
        'RuntimeError: failed finding central directory'
    """
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    text = re.split(r"(?<=\.) ", text, maxsplit=1)[0].rstrip(".")
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def _hashed_backbone(net: str, path: Path) -> BackboneFile:
    """Hash the backbone file and hold it to the hash prefix its name carries, if any (no loading).

    Raises:
        WeightsError: the file cannot be read, or its sha256 does not start with the prefix in its name;
            the message names the file, both prefixes and what to do.
    """
    try:
        stat = path.stat()
        digest = _sha256(str(path), stat.st_size, stat.st_mtime_ns)
    except OSError as exc:
        raise WeightsError(
            f"LPIPS backbone {path} cannot be read ({one_line(exc)}); check that the file exists and is "
            "readable, or pass another with --lpips-weights FILE."
        ) from exc
    expected = name_hash_prefix(path)
    if expected is not None and not digest.startswith(expected):
        raise WeightsError(
            f"LPIPS backbone {path}: its sha256 starts with {digest[: len(expected)]}, but its name says "
            f"{expected}. The file is not the checkpoint its name claims (a partial download, or other "
            "weights under torchvision's name): delete it so that it is downloaded again (from "
            f"{backbone_url(net)}), or pass your own weights under a name without a hash "
            "(--lpips-weights FILE)."
        )
    return BackboneFile(path.absolute(), digest, stat.st_size, stat.st_mtime_ns)


def verify_backbone(net: str, path: Path) -> BackboneFile:
    """Check a backbone file before a run: its hash against its name, then a strict load into torchvision's
    architecture. Call it on the client; workers build from the returned `BackboneFile`.

    Raises:
        WeightsError: wrong hash, unreadable or truncated file, or not the architecture of `net`.

    Example (a stand-in checkpoint under a name without a hash):
        >>> import tempfile
        >>> from pipeline.metrics.lpips_network import backbone_model
        >>> checkpoint = Path(tempfile.mkdtemp()) / "squeezenet-seeded.pth"
        >>> torch.save(backbone_model("squeeze").state_dict(), checkpoint)
        >>> backbone = verify_backbone("squeeze", checkpoint)
        >>> len(backbone.sha256), backbone.size == checkpoint.stat().st_size
        (64, True)
    """
    backbone = _hashed_backbone(net, path)
    _backbone_features(net, path)
    return backbone


def load_backbone_weights(net: str, backbone: BackboneFile) -> BackboneWeights:
    """The `features` tensors of a verified backbone file, loaded strictly again, to ship to Dask workers.

    Raises:
        WeightsError: the file changed since it was verified, or cannot be loaded.

    Example (a stand-in checkpoint under a name without a hash):
        >>> import tempfile
        >>> from pipeline.metrics.lpips_network import backbone_model
        >>> checkpoint = Path(tempfile.mkdtemp()) / "squeezenet-seeded.pth"
        >>> torch.save(backbone_model("squeeze").state_dict(), checkpoint)
        >>> weights = load_backbone_weights("squeeze", verify_backbone("squeeze", checkpoint))
        >>> sorted(weights.features)[:2], weights.digest == tensors_sha256(weights.features)
        (['0.bias', '0.weight'], True)
    """
    features = _backbone_features(net, _unchanged(backbone).path)
    compact = {name: tensor.detach().clone() for name, tensor in features.items()}  # no shared storage
    return BackboneWeights(net, backbone, compact, tensors_sha256(compact))


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """sha256 (hex) of named tensors: each name, dtype, shape and bytes, in name order.

    Example:
        >>> tensors_sha256({"b": torch.ones(2)}) == tensors_sha256({"b": torch.ones(2)})
        True
        >>> tensors_sha256({"b": torch.ones(2)}) == tensors_sha256({"b": torch.ones(2, 1)})
        False
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _received(weights: BackboneWeights) -> dict[str, Tensor]:
    """The shipped `features` after checking they hash to the digest the client recorded with them."""
    digest = tensors_sha256(weights.features)
    if digest != weights.digest:
        raise WeightsError(
            f"LPIPS backbone weights received from the client for {weights.file.path} hash to "
            f"{digest[:12]}, not to the {weights.digest[:12]} recorded with them: they were damaged on the "
            "way to this worker. Run again; if it repeats, check the worker's memory and network."
        )
    return weights.features


def _unchanged(backbone: BackboneFile) -> BackboneFile:
    """`backbone` after checking the file still has the size and modification time it had when verified."""
    try:
        stat = backbone.path.stat()
    except OSError as exc:
        raise WeightsError(
            f"LPIPS backbone {backbone.path} cannot be read where the network is built ({one_line(exc)}). "
            "Dask workers get the weights from the client, so this is a call outside a Dask run (or a worker "
            "without the run's plugin), which needs the file at this path; pass a readable copy with "
            "--lpips-weights FILE."
        ) from exc
    if (stat.st_size, stat.st_mtime_ns) != (backbone.size, backbone.mtime_ns):
        raise WeightsError(
            f"LPIPS backbone {backbone.path} changed after it was checked at the start of the run (size or "
            "modification time differ); leave the weights file alone while a run uses it, and run again."
        )
    return backbone


def _download(net: str, destination: Path) -> str | None:
    """Download the backbone into `destination`; return None on success, else why it failed."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            backbone_url(net), str(destination), hash_prefix=name_hash_prefix(destination), progress=False
        )
    except (OSError, RuntimeError, ValueError) as exc:
        return one_line(exc)
    return None


def given_weights_file(given: str | Path, filename: str, what: str, option: str, url: str) -> Path:
    """The weights file a user gave with `option`: the path itself, or `filename` in the folder it names.

    Raises:
        WeightsError: no such file; one line naming the path, the file expected, and where to get it.

    Example:
        >>> given_weights_file("/nowhere", "net.pth", "LPIPS", "--lpips-weights", "https://example.org/net.pth")
        Traceback (most recent call last):
        ...
        pipeline.errors.WeightsError: LPIPS weights path '/nowhere' given with --lpips-weights has no file ...
    """
    path = Path(given).expanduser()
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise WeightsError(
            f"{what} weights path {str(given)!r} given with {option} has no file {path}; "
            f"pass the checkpoint {filename} itself or a folder holding it (get it from {url})."
        )
    return path


def resolve_backbone(
    net: str, weights_path: str | Path | None = None, *, allow_download: bool = True
) -> Path:
    """Find the backbone checkpoint file for LPIPS network `net`.

    Args:
        net: 'alex', 'vgg' or 'squeeze'.
        weights_path: a checkpoint file, or a folder holding `backbone_filename(net)`; when given it is
            the only place looked at.
        allow_download: try torchvision's URL into the cache when the cache has no file.

    Returns:
        Path of an existing checkpoint file (its contents are checked by `verify_backbone`).

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
        path = given_weights_file(weights_path, filename, "LPIPS", "--lpips-weights", backbone_url(net))
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


def load_state_dict(path: Path, what: str, fix: str, data: bytes | None = None) -> dict[str, Tensor]:
    """Read a state dict of tensors (no pickled code) from `path`, or from `data` when its bytes are already
    read; `what` names the file in errors, `fix` says what to do."""
    try:
        source = io.BytesIO(data) if data is not None else path
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{what} {path} cannot be loaded ({one_line(exc)}); "
            f"it is truncated or not a PyTorch checkpoint: {fix}."
        ) from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(
            f"{what} {path} is not a state dict of tensors (got {type(state).__name__}); {fix}."
        )
    return dict(state)


def _backbone_features(net: str, path: Path) -> dict[str, Tensor]:
    """The `features.*` tensors of the checkpoint at `path`, after loading it strictly into torchvision's
    architecture of `net` (built on the meta device, so nothing is allocated twice)."""
    source = f"torchvision's {backbone_filename(net)} from {backbone_url(net)}"
    fix = f"replace it with a complete copy, or use {source}"
    state = load_state_dict(path, "LPIPS backbone", fix)
    with torch.device("meta"):
        reference = backbone_model(net)
    try:
        reference.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"LPIPS backbone {path} does not match torchvision's {BACKBONE_NAMES[net]} for net {net!r} "
            f"({one_line(exc)}); use the file {backbone_filename(net)} from {backbone_url(net)}."
        ) from exc
    return reference.features.state_dict()


def _load_backbone(network: LpipsNetwork, features: dict[str, Tensor]) -> None:
    """Copy the backbone's `features` tensors into the network's trunk (`net.sliceK.<index>.*`)."""
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
    state = load_state_dict(shipped, "LPIPS linear-layer file", "reinstall the `lpips` package")
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


def _features(
    net: str, weights: str | Path | BackboneFile | BackboneWeights | None, allow_download: bool
) -> tuple[dict[str, Tensor], Path]:
    """The backbone's `features` tensors for `build_lpips_network`, and the file they come from."""
    if isinstance(weights, BackboneWeights):
        assert weights.net == net, f"weights of {weights.net!r} shipped for {net!r}"
        return _received(weights), weights.file.path
    if isinstance(weights, BackboneFile):
        path = _unchanged(weights).path
    else:
        path = _hashed_backbone(net, resolve_backbone(net, weights, allow_download=allow_download)).path
    return _backbone_features(net, path), path


def build_lpips_network(
    net: str = "alex",
    weights: str | Path | BackboneFile | BackboneWeights | None = None,
    *,
    device: str | torch.device = "cpu",
    allow_download: bool = True,
) -> LpipsNetwork:
    """Build the LPIPS v0.1 network once, with strictly loaded weights.

    Args:
        net: backbone, 'alex' (default), 'vgg' or 'squeeze'.
        weights: `BackboneWeights` shipped from the client (their digest is checked again; no file is
            opened), a `BackboneFile` from `verify_backbone` (only its size and modification time are checked
            again), or a backbone checkpoint file or folder (`--lpips-weights`; found by `resolve_backbone`
            and held to the hash prefix in its name).
        device: where the network lives.
        allow_download: allow fetching the backbone into torchvision's cache when it is missing.

    Returns:
        `LpipsNetwork` (the modules of `lpips.LPIPS(net=net, version="0.1")`) in eval mode, parameters
        frozen (`requires_grad=False`), channels-last, on `device`.

    Raises:
        WeightsError: the backbone or the linear layers are missing, unreadable, do not hash to the prefix in
            their name, or do not match; a verified backbone file changed since; shipped tensors do not hash
            to their digest.

    Example (a stand-in checkpoint; real runs use torchvision's file from the cache or `--lpips-weights`):
        >>> import tempfile
        >>> from pipeline.metrics.lpips_network import backbone_model
        >>> checkpoint = tempfile.mkdtemp() + "/stand-in-squeezenet.pth"
        >>> torch.save(backbone_model("squeeze").state_dict(), checkpoint)
        >>> network = build_lpips_network("squeeze", checkpoint)
        >>> network.pnet_type, network.training
        ('squeeze', False)
    """
    features, path = _features(net, weights, allow_download)
    with torch.device("meta"):
        network = LpipsNetwork(net)
    network.scaling_layer = ScalingLayer()
    _load_linear_layers(network, net)
    _load_backbone(network, features)
    _check_every_tensor_loaded(network, net, path)
    network.eval().requires_grad_(False)
    return network.to(device=device, memory_format=torch.channels_last)
