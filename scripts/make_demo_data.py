"""Build demo data from photos that ship inside scikit-image: references plus realistic model outputs.

    python scripts/make_demo_data.py demo-data        # writes demo-data/reference and demo-data/output

Groups (first folder of each key): `denoise` (Gaussian noise then a median filter), `sr_x2` and `sr_x4`
(bicubic down- then up-sampling), `jpeg` (quality 20 and 50). Outputs of `jpeg` are saved as .jpg while
references stay .png, to show pairing by key across extensions.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import skimage
from PIL import Image, ImageFilter

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "camera.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "page.png",
    "moon.png",
)


def open_photo(name: str) -> Image.Image:
    """A photo bundled with scikit-image at its full size: gray ones as 'L', the others as 'RGB'."""
    image = Image.open(SKIMAGE_DATA / name)
    return image.convert("L") if image.mode in ("L", "I", "I;16") else image.convert("RGB")


def load_photo(name: str) -> Image.Image:
    """`open_photo` resized to at most 512 px on its long side, both sides a multiple of 4."""
    image = open_photo(name)
    width, height = image.size
    scale = min(1.0, 512 / max(width, height))
    size = (int(width * scale) // 4 * 4, int(height * scale) // 4 * 4)
    return image.resize(size, Image.BICUBIC) if size != image.size else image


def denoise_output(image: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, 15, np.asarray(image).shape)
    noisy_image = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))
    return noisy_image.filter(ImageFilter.MedianFilter(3))


def super_resolution_output(image: Image.Image, factor: int) -> Image.Image:
    small = image.resize((image.width // factor, image.height // factor), Image.BICUBIC)
    return small.resize(image.size, Image.BICUBIC)


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def build(root: Path) -> int:
    """Write root/reference and root/output; returns the number of pairs."""
    count = 0
    for index, name in enumerate(PHOTOS):
        stem = Path(name).stem
        image = load_photo(name)
        outputs = {
            f"denoise/{stem}.png": denoise_output(image, index),
            f"sr_x2/{stem}.png": super_resolution_output(image, 2),
            f"sr_x4/{stem}.png": super_resolution_output(image, 4),
        }
        for key, output in outputs.items():
            save(root / "reference" / key, image)
            save(root / "output" / key, output)
            count += 1
        quality = 20 if index % 2 else 50
        save(root / "reference" / f"jpeg/{stem}.png", image)
        target = root / "output" / f"jpeg/{stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(jpeg_bytes(image, quality))
        count += 1
    return count


def save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="folder to create (reference/ and output/ inside)")
    args = parser.parse_args()
    pairs = build(args.root)
    print(f"demo data: {pairs} pairs in {args.root}/reference and {args.root}/output")


if __name__ == "__main__":
    main()
