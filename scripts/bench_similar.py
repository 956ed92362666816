"""Benchmark `iqa similar` end to end: 500 photo variants (~256 px), embedded cluster with 2 workers, SSIM.

The images are crops, flips, brightness and JPEG variants of the photos bundled with scikit-image, written
to a temporary folder. Prints the wall time of the whole command and the comparisons per second.

    .venv/bin/python scripts/bench_similar.py [--images 500] [--size 128] [--workers 2] [--metric ssim]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import make_demo_data
import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from typer.testing import CliRunner

from pipeline.cli import app

PHOTOS = (*make_demo_data.PHOTOS, "retina.jpg", "hubble_deep_field.jpg", "immunohistochemistry.png")


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    """Write `count` PNG/JPEG variants of the bundled photos, each about 256 px on its short side."""
    rng = np.random.default_rng(seed)
    photos = [make_demo_data.open_photo(n) for n in PHOTOS if (make_demo_data.SKIMAGE_DATA / n).exists()]
    for index in range(count):
        image = photos[index % len(photos)]
        side = min(image.size)
        crop = int(side * rng.uniform(0.45, 0.95))
        left = int(rng.integers(0, image.width - crop + 1))
        top = int(rng.integers(0, image.height - crop + 1))
        variant = image.crop((left, top, left + crop, top + crop)).resize(
            (256, 256), Image.Resampling.BICUBIC
        )
        if rng.random() < 0.3:
            variant = ImageOps.mirror(variant)
        if rng.random() < 0.3:
            variant = ImageEnhance.Brightness(variant).enhance(float(rng.uniform(0.8, 1.2)))
        if rng.random() < 0.5:
            buffer = io.BytesIO()
            variant.save(buffer, format="JPEG", quality=int(rng.integers(40, 95)))
            (folder / f"img_{index:04d}.jpg").write_bytes(buffer.getvalue())
        else:
            variant.save(folder / f"img_{index:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--metric", default="ssim")
    parser.add_argument("--block", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder, run_dir = Path(temp) / "images", Path(temp) / "run"
        folder.mkdir()
        make_images(folder, args.images)
        command = [
            "similar",
            str(folder),
            "-o",
            str(run_dir),
            "--metric",
            args.metric,
            "--size",
            str(args.size),
            "--workers",
            str(args.workers),
            "--block",
            str(args.block),
        ]
        start = time.perf_counter()
        result = CliRunner().invoke(app, command)
        wall = time.perf_counter() - start
        if result.exit_code != 0:
            raise SystemExit(f"iqa similar failed ({result.exit_code}):\n{result.output}")
        manifest = json.loads((run_dir / "manifest.json").read_text())
    pairs = manifest["comparisons"]
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in manifest["timings"].items())
    print(
        f"iqa similar: {args.images} images, metric {args.metric}, size {args.size}, block {args.block}, "
        f"{manifest['executor']}"
    )
    print(
        f"{pairs} comparisons; wall {wall:.1f} s end to end -> {pairs / wall:.0f} comparisons/s "
        f"(compare stage {manifest['comparisons_per_s']:.0f}/s); {timings}"
    )


if __name__ == "__main__":
    main()
