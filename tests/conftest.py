"""Shared fixtures: real photos shipped inside scikit-image, realistic degradations, small image trees."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageFilter
from skimage.metrics import structural_similarity

from pipeline.metrics.inception import seeded_inception_state_dict
from pipeline.metrics.lpips_weights import backbone_filename, build_lpips_network

# A scheduler address in the developer's shell would send the suite's local-cluster runs to that cluster; the
# tests that use the variable set it themselves.
os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
dask.config.set({"scheduler-address": None})

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
PSNR_TOL = 1e-4
SSIM_TOL = 1e-5
LPIPS_TOL = 1e-5


def real_image(name: str) -> np.ndarray:
    """A photo from scikit-image's package folder as uint8 (H, W) or (H, W, 3)."""
    image = np.asarray(Image.open(SKIMAGE_DATA / name))
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image)


def degrade(image: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """Realistic degradations: jpeg, blur, noise, bicubic2, bicubic4 (same size as the input, uint8)."""
    pil = Image.fromarray(image)
    if kind == "jpeg":
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=25)
        return np.asarray(Image.open(buffer).convert(pil.mode))
    if kind == "blur":
        return np.asarray(pil.filter(ImageFilter.GaussianBlur(1.5)))
    if kind == "noise":
        rng = np.random.default_rng(seed)
        return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).round().astype(np.uint8)
    if kind.startswith("bicubic"):
        factor = int(kind[-1])
        small = pil.resize((pil.width // factor, pil.height // factor), Image.BICUBIC)
        return np.asarray(small.resize(pil.size, Image.BICUBIC))
    raise ValueError(kind)


DEGRADATIONS = ("jpeg", "blur", "noise", "bicubic2", "bicubic4")
ORACLE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png")


def image_batch(image: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """An (H, W) or (H, W, C) image as a (1, C, H, W) tensor of `dtype`."""
    array = image if image.ndim == 3 else image[..., None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).unsqueeze(0).to(dtype)


@pytest.fixture(
    scope="module",
    params=[(p, d) for p in ORACLE_PHOTOS for d in DEGRADATIONS],
    ids=lambda v: f"{v[0]}-{v[1]}",
)
def photo_pair(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    """(reference photo, degraded copy) for every oracle photo and degradation."""
    name, kind = request.param
    reference = real_image(name)
    return reference, degrade(reference, kind)


@pytest.fixture
def accelerators(monkeypatch: pytest.MonkeyPatch):
    """`accelerators(cuda=N, mps=bool)` makes torch report N CUDA devices and Apple's MPS as given, so that
    device selection is tested without the hardware."""

    def pretend(cuda: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return pretend


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `gpu` skip where no CUDA device is visible."""
    if item.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """scikit-image's SSIM with Wang et al.'s settings (11x11 Gaussian, sigma 1.5, population statistics)
    on (H, W) or (H, W, 3) images: the oracle of DESIGN.md section 6."""
    return structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        channel_axis=2 if a.ndim == 3 else None,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
    )


def matlab_y(image: np.ndarray) -> np.ndarray:
    """BasicSR's `rgb2ycbcr(img, y_only=True)` (MATLAB's formula) on 8-bit RGB (H, W, 3), unrounded, float64:
    16 + (65.481 R + 128.553 G + 24.966 B) / 255."""
    rgb = image.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def save_image(path: Path, array: np.ndarray) -> str:
    """Write a uint8/uint16 array as an image file (parents created); returns the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture
def image_tree(tmp_path: Path):
    """Factory: write {relative path: uint8 array} into tmp_path/<name>, return the folder."""

    def make(name: str, images: dict[str, np.ndarray]) -> Path:
        root = tmp_path / name
        for rel, array in images.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".npy":
                np.save(path, array)
            else:
                Image.fromarray(array).save(path)
        return root

    return make


@pytest.fixture
def photo_folders(tmp_path: Path) -> tuple[Path, Path]:
    """tmp_path/ref and tmp_path/out: 128 x 128 crops of two real photos and their noisy versions."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    for name in ("astronaut.png", "camera.png"):
        image = real_image(name)[:128, :128]
        save_image(ref / name, image)
        save_image(out / name, degrade(image, "noise"))
    return ref, out


def make_dataset(root: Path, count: int, size: int = 200) -> tuple[Path, Path]:
    """root/ref and root/out: `count` size x size crops of real photos in groups g0..g2, outputs noisy."""
    ref, out = root / "ref", root / "out"
    names = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png", "motorcycle_left.png")
    for index in range(count):
        image = real_image(names[index % len(names)])
        offset = (index * 7) % 40
        crop = image[offset : offset + size, offset : offset + size]
        name = f"g{index % 3}/{index:04d}.png"
        save_image(ref / name, crop)
        save_image(out / name, degrade(crop, "noise", seed=index))
    return ref, out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# LPIPS backbones: seeded random torchvision checkpoints. The pipeline takes them under names without a hash
# (`alex_weights`) or named after their own sha256 (`hash_named`); the `lpips` package, the oracle, reads
# them from torchvision's cache under torchvision's names (`alex_home`), which the pipeline refuses.
ARCHITECTURES = {"alex": torchvision.models.alexnet, "squeeze": torchvision.models.squeezenet1_1}


def seeded_state_dict(net: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return ARCHITECTURES[net](weights=None).state_dict()


@pytest.fixture(scope="session")
def checkpoint_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded torchvision checkpoints, saved once: `<net>-seed<k>.pth`."""
    store = tmp_path_factory.mktemp("checkpoints")
    for net, seed in (("alex", 0), ("alex", 1), ("squeeze", 0)):
        torch.save(seeded_state_dict(net, seed), store / f"{net}-seed{seed}.pth")
    return store


def touch(root: Path, *names: str) -> None:
    """Empty files `root/name` (folders made as needed): enough for pairing, which reads no pixels."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Empty tmp_path/ref and tmp_path/out."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    ref.mkdir()
    out.mkdir()
    return ref, out


def install(source: Path, destination: Path) -> Path:
    """Put `source` at `destination` (hard link when possible: the AlexNet file is ~240 MB)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)
    return destination


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def hash_named(source: Path, folder: Path, stem: str) -> Path:
    """Put `source` into `folder` as `<stem>-<first 8 hex of its sha256>.pth`, torchvision's naming."""
    return install(source, folder / f"{stem}-{sha256_of(source)[:8]}.pth")


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torchvision cache: TORCH_HOME=tmp_path; returns its `hub/checkpoints` folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture
def alex_home(torch_home: Path, checkpoint_store: Path) -> Path:
    """Torchvision cache holding the seed-0 AlexNet checkpoint under torchvision's file name, for the
    `lpips` package; the pipeline refuses it (its sha256 does not start with 7be5be79): use `alex_weights`."""
    return install(checkpoint_store / "alex-seed0.pth", torch_home / backbone_filename("alex"))


@pytest.fixture
def alex_weights(checkpoint_store: Path) -> Path:
    """The seed-0 AlexNet checkpoint under a name without a hash (`--lpips-weights FILE`)."""
    return checkpoint_store / "alex-seed0.pth"


# Adapted network metrics: pyiqa's LPIPS with seeded weights where pyiqa looks for them. pyiqa is an optional
# extra that takes seconds to import, so the fixtures import it (or skip) when a test asks for them.
@pytest.fixture
def pyiqa_cache(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pyiqa's weights folder under the test's TORCH_HOME (pyiqa fixed its folder when it was imported)."""
    download_util = pytest.importorskip("pyiqa.utils.download_util")
    folder = torch_home.parent / "pyiqa"
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def seeded_pyiqa_lpips(alex_home: Path, pyiqa_cache: Path, no_download: None) -> tuple[Path, Path]:
    """pyiqa's LPIPS (alex) weights: the seeded AlexNet in torchvision's cache, seeded linear layers in
    pyiqa's; returns both files."""
    pyiqa = pytest.importorskip("pyiqa")
    torch.manual_seed(3)
    layers = {key: torch.rand_like(value) for key, value in pyiqa.create_metric("lpips", pretrained=False,
              device="cpu").net.state_dict().items() if key.startswith("lin")}  # fmt: skip
    path = pyiqa_cache / "LPIPS_v0.1_alex-df73285e.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(layers, path)
    return alex_home, path


# LPIPS test material


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to download weights."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected download: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


@pytest.fixture
def offline(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torchvision cache and no network: a download raises OSError. Returns the cache folder."""

    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    return torch_home


def read_photo(name: str) -> np.ndarray:
    with Image.open(SKIMAGE_DATA / name) as image:
        return np.asarray(image.convert("L" if name == "camera.png" else "RGB"))


def degradations(image: np.ndarray) -> list[np.ndarray]:
    """JPEG q=20, Gaussian blur, Gaussian noise: three uint8 images shaped like `image`."""
    pil = Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=20)
    jpeg = np.asarray(Image.open(buffer).convert(pil.mode))
    blur = np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=2)))
    noise = np.random.default_rng(0).normal(0.0, 12.0, image.shape)
    noisy = np.clip(image + noise, 0, 255).round().astype(np.uint8)
    return [jpeg, blur, noisy]


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W[, 3]) images -> float (N, C, H, W) in [0, 255]."""
    batch = torch.from_numpy(np.stack(images)).float()
    return batch.unsqueeze(1) if batch.dim() == 3 else batch.permute(0, 3, 1, 2)


def reference_input(batch: torch.Tensor) -> torch.Tensor:
    """The `lpips` package's convention: RGB in [-1, 1] as im / 127.5 - 1."""
    return (batch / 127.5 - 1).expand(-1, 3, -1, -1)


@pytest.fixture
def squeeze_network(torch_home: Path, checkpoint_store: Path) -> torch.nn.Module:
    return build_lpips_network("squeeze", checkpoint_store / "squeeze-seed0.pth", allow_download=False)


def one_line_error(result, exit_code: int, *needles: str) -> str:
    """Check a CLI result: `exit_code`, no traceback, one line `error: ...` holding every needle; the line."""
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# Object storage: moto's standalone S3 server (a real HTTP server speaking the S3 API), started by the tests.
def start_s3_server(port: int, **env: str) -> subprocess.Popen:
    """moto's S3 server on 127.0.0.1:`port`, ready to answer."""
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
    except RuntimeError:
        server.kill()
        raise
    return server


def wait_for_port(port: int, timeout: float = 30) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`; RuntimeError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def s3_environment(endpoint: str) -> dict[str, str]:
    """The variables that point botocore (and so s3fs) at the test server with its dummy credentials."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# FID/KID: seeded stand-ins for torch-fidelity's Inception weights, under a name without a hash (the
# pipeline's `--inception-weights FILE`); torchmetrics takes the same file (`feature_extractor_weights_path`).
@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed-0 Inception weights (`pipeline.metrics.inception.seeded_inception_state_dict`), saved once."""
    path = tmp_path_factory.mktemp("inception") / "inception-seed0.pth"
    torch.save(seeded_inception_state_dict(seed=0), path)
    return path
