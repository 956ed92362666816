"""Inception-v3 features for FID and KID: find the weights file, verify it, build the extractor once.

The extractor is torchmetrics' `NoTrainInceptionV3`: torch-fidelity's port of the TensorFlow FID Inception
(Heusel et al. 2017), returning the 2048-d pool3 features of uint8 RGB images resized to 299 x 299. How the
images are resized is the extractor's convention (`pipeline.choices.InceptionResize`):

* `torchmetrics`: bilinear with antialiasing (`torch.nn.functional.interpolate(..., antialias=True)`), the
  default of torchmetrics' `FrechetInceptionDistance` and `KernelInceptionDistance`.
* `torch-fidelity`: torch-fidelity's TensorFlow-1.x-compatible bilinear resize without antialiasing, as
  torch-fidelity and the original TensorFlow FID code compute it (torchmetrics' `antialias=False`).

clean-fid's resizing (PIL bicubic on float values) is not offered.

Weights: torch-fidelity's checkpoint `weights-inception-2015-12-05-6726825d.pth`, found in this order: an
explicit path (`--inception-weights`, a file or a folder holding it), torch's hub cache
(`$TORCH_HOME/hub/checkpoints`). It is never downloaded here: offline machines get one line naming the file
and the folder. A file under a name with a hash prefix must hash to it; any other name is taken as the user's
own weights. `verify_inception` checks a file once on the client (its sha256, a safe tensors-only load, then
the extractor built from it, which loads strictly) and returns `InceptionWeights`: the file's bytes and
sha256, shipped to Dask workers, which check the sha256 again before they build the extractor. A file that
is missing, partial or of another architecture stops the run; features never come from random weights.

Example (stand-in weights; real runs use torch-fidelity's file):
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "inception-seeded.pth"
    >>> torch.save(seeded_inception_state_dict(seed=0), path)
    >>> weights = verify_inception(path)
    >>> extractor = build_inception(weights, "torchmetrics", torch.device("cpu"))
    >>> images = torch.randint(0, 256, (2, 3, 64, 80), dtype=torch.uint8)
    >>> inception_features(extractor, images).shape
    torch.Size([2, 2048])
"""

from __future__ import annotations

import hashlib
import importlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from pipeline.choices import InceptionResize
from pipeline.errors import UsageError, WeightsError
from pipeline.metrics.lpips_weights import given_weights_file, load_state_dict, name_hash_prefix, one_line

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's URL_INCEPTION_V3 (tested)
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
FEATURE_DIM = 2048  # pool3 features
INCEPTION_BATCH = 32  # images per forward pass (each is resized to 299 x 299 first)
EXTRA_HINT = "install the `fid` extra: pip install 'iqa-pipeline[fid]' (torchmetrics and torch-fidelity)"
RESIZE_DESCRIPTIONS = {
    InceptionResize.TORCHMETRICS.value: "bilinear with antialiasing to 299x299 (torchmetrics' default)",
    InceptionResize.TORCH_FIDELITY.value: (
        "TensorFlow-1.x-compatible bilinear without antialiasing to 299x299 (torch-fidelity, original FID)"
    ),
}


@dataclass(frozen=True)
class InceptionFile:
    """A verified weights file: where it is (absolute) and its sha256 (hex)."""

    path: Path
    sha256: str


@dataclass(frozen=True, eq=False)
class InceptionWeights:
    """The bytes of a verified weights file, which workers build the extractor from (no shared disk needed).

    `file.sha256` is the sha256 of `data`, checked again by `build_inception`.
    """

    file: InceptionFile
    data: bytes = field(default=b"", repr=False)

    @property
    def nbytes(self) -> int:
        return len(self.data)


def inception_cache_path() -> Path:
    """Torch's hub cache file of torch-fidelity's weights: `torch.hub.get_dir()/checkpoints/<file>`.

    Example:
        >>> inception_cache_path().name
        'weights-inception-2015-12-05-6726825d.pth'
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_inception(weights_path: str | Path | None = None) -> Path:
    """Find the Inception weights file: `weights_path` (a file, or a folder holding `INCEPTION_FILE`), else
    torch's hub cache.

    Raises:
        WeightsError: no file there; the message names the file, the folder to put it in, and its URL.

    Example:
        >>> resolve_inception("/nowhere/inception.pth")
        Traceback (most recent call last):
        ...
        pipeline.errors.WeightsError: Inception weights path '/nowhere/inception.pth' given with ...
    """
    if weights_path is not None:
        option = "--inception-weights"
        return given_weights_file(weights_path, INCEPTION_FILE, "Inception", option, INCEPTION_URL)
    cache_path = inception_cache_path()
    if cache_path.is_file():
        return cache_path
    raise WeightsError(
        f"Inception weights for FID/KID are missing: put the file {INCEPTION_FILE} into the folder "
        f"{cache_path.parent} (download it on a machine with internet from {INCEPTION_URL}), or pass "
        "--inception-weights PATH with the file or its folder."
    )


def verify_inception(path: str | Path) -> InceptionWeights:
    """Read a weights file once and check it: its sha256 against the prefix in its name, a tensors-only load,
    then the extractor built from it (torch-fidelity loads the state dict strictly). Call it on the client.

    Raises:
        UsageError: torchmetrics or torch-fidelity is not installed (the message names the extra).
        WeightsError: unreadable file, wrong hash, not a state dict of tensors, or another architecture.
    """
    path = Path(path).absolute()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(
            f"Inception weights {path} cannot be read ({one_line(exc)}); check that the file exists and is "
            "readable, or pass another with --inception-weights FILE."
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    expected = name_hash_prefix(path)
    if expected is not None and not digest.startswith(expected):
        raise WeightsError(
            f"Inception weights {path}: its sha256 starts with {digest[: len(expected)]}, but its name says "
            f"{expected}. The file is not the checkpoint its name claims (a partial download, or other "
            f"weights under torch-fidelity's name): replace it with {INCEPTION_URL}, or pass your own "
            "weights under a name without a hash (--inception-weights FILE)."
        )
    weights = InceptionWeights(InceptionFile(path, digest), data)
    _check_tensors_only(weights)
    build_inception(weights, InceptionResize.TORCHMETRICS.value, torch.device("cpu"))
    return weights


def read_inception(file: InceptionFile) -> InceptionWeights:
    """The bytes of a verified file, read again where no shipped copy exists (`--scheduler sync`, direct
    calls); `build_inception` checks they still hash to `file.sha256`."""
    try:
        return InceptionWeights(file, file.path.read_bytes())
    except OSError as exc:
        raise WeightsError(
            f"Inception weights {file.path} cannot be read where the extractor is built ({one_line(exc)}); "
            "Dask workers get the weights from the client, so this is a call outside a Dask run, which needs "
            "the file at this path."
        ) from exc


def _check_tensors_only(weights: InceptionWeights) -> None:
    """The file loads as a state dict of tensors without running pickled code (`weights_only=True`)."""
    fix = f"replace it with a complete copy of {INCEPTION_URL}, or pass another with --inception-weights"
    load_state_dict(weights.file.path, "Inception weights", fix, data=weights.data)


def _extractor_class() -> type[torch.nn.Module]:
    """torchmetrics' `NoTrainInceptionV3` (which subclasses torch-fidelity's extractor).

    Raises:
        UsageError: torchmetrics or torch-fidelity is missing.
    """
    try:
        importlib.import_module("torch_fidelity")
        return importlib.import_module("torchmetrics.image.fid").NoTrainInceptionV3
    except ImportError as exc:
        raise UsageError(f"FID and KID need torchmetrics and torch-fidelity ({exc}): {EXTRA_HINT}.") from exc


def build_inception(weights: InceptionWeights, resize: str, device: torch.device) -> torch.nn.Module:
    """Build the extractor once from verified weights, in eval mode, frozen, on `device`.

    Args:
        weights: from `verify_inception` (client) or shipped to a worker; their sha256 is checked first.
        resize: an `InceptionResize` value.
        device: where the extractor runs.

    Raises:
        WeightsError: the bytes do not hash to the recorded sha256, or do not load into the architecture.
    """
    digest = hashlib.sha256(weights.data).hexdigest()
    if digest != weights.file.sha256:
        raise WeightsError(
            f"Inception weights {weights.file.path} hash to {digest[:12]} here, not to the "
            f"{weights.file.sha256[:12]} checked at the start of the run: the file changed (leave it alone "
            "while a run uses it) or the copy sent to this worker was damaged. Run again."
        )
    extractor_class = _extractor_class()
    try:
        extractor = extractor_class(
            name="inception-v3-compat",
            features_list=[str(FEATURE_DIM)],
            feature_extractor_weights_path=io.BytesIO(weights.data),
            antialias=InceptionResize(resize) == InceptionResize.TORCHMETRICS,
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise WeightsError(
            f"Inception weights {weights.file.path} do not match torch-fidelity's Inception v3 "
            f"({one_line(exc)}); use the file {INCEPTION_FILE} from {INCEPTION_URL}."
        ) from exc
    return extractor.requires_grad_(False).to(device)


def inception_input(images: Tensor, data_range: float) -> Tensor:
    """Stored values -> the extractor's input: uint8 RGB in [0, 255].

    8-bit images pass unchanged; other ranges become `x / data_range * 255` truncated to uint8, as
    torchmetrics' `normalize=True` does (`(x * 255).byte()`); one channel is replicated to three.

    Args:
        images: (N, C, H, W) stored values in [0, data_range], C = 1 or 3.
        data_range: the peak value of the stored values.

    Returns:
        (N, 3, H, W) uint8.

    Example:
        >>> inception_input(torch.tensor([[[[0, 32768, 65535]]]]), 65535.0)
        tensor([[[[  0, 127, 255]],
        <BLANKLINE>
                 [[  0, 127, 255]],
        <BLANKLINE>
                 [[  0, 127, 255]]]], dtype=torch.uint8)
    """
    if images.dtype != torch.uint8 or data_range != 255:
        images = (images.double() / data_range * 255).clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def inception_features(extractor: torch.nn.Module, images: Tensor) -> Tensor:
    """Pool3 features of uint8 RGB images, `INCEPTION_BATCH` images per forward pass.

    Args:
        extractor: from `build_inception`, on the device of `images`.
        images: (N, 3, H, W) uint8 (`inception_input`).

    Returns:
        (N, 2048) float32 on the CPU.
    """
    return torch.cat([extractor(part).float().cpu() for part in images.split(INCEPTION_BATCH)])


def seeded_inception_state_dict(seed: int = 0) -> dict[str, Tensor]:
    """A stand-in for torch-fidelity's weights with the same keys and shapes: seeded random convolutions
    (Kaiming-normal, so features keep a realistic scale), batch norms at identity. For tests and examples
    on machines without the real file; FID and KID with it are not comparable with published numbers.

    Raises:
        UsageError: torch-fidelity is not installed.
    """
    try:
        module = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    except ImportError as exc:
        raise UsageError(f"Seeded Inception weights need torch-fidelity ({exc}): {EXTRA_HINT}.") from exc

    class Unloaded(module.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> None:
            """Keep the seeded initialisation (the constructor loads the state dict it is given)."""

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        network = Unloaded("inception-v3-compat", [str(FEATURE_DIM)], feature_extractor_weights_path=empty)
        for layer in network.modules():
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    finally:
        torch.random.set_rng_state(generator_state)
    return {name: tensor.clone() for name, tensor in network.state_dict().items()}
