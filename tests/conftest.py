"""Shared fixtures: real photos shipped inside scikit-image, realistic degradations, small image trees."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

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
