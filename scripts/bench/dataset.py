"""The benchmark dataset: scikit-image's bundled photos and degraded outputs, paired as `iqa score` does.

Example:
    >>> count = build_dataset(Path("data"), limit=12)  # doctest: +SKIP
    >>> pairs = list_pairs(Path("data/reference"), Path("data/output"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path

import make_demo_data
import torch
import torchvision
from PIL import Image, ImageOps

from bench.pairs import PairPaths
from pipeline.discover import discover_pairs

EXTRA_PHOTOS = ("coins.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_right.png")
PHOTOS = (*make_demo_data.PHOTOS, *EXTRA_PHOTOS)
PAIRS_PER_PHOTO = 5  # `build_dataset`: denoise, sr_x2, sr_x4, jpeg_q20, jpeg_q50
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's cache name, where the `lpips` package looks
SEEDED_ALEXNET_FILE = "alexnet-seeded.pth"  # a name without a hash prefix: what `--lpips-weights` is given


def build_dataset(
    root: Path, limit: int | None = None, prepare: Callable[[Image.Image], Image.Image] | None = None
) -> int:
    """Write root/reference and root/output: 12 photos (3 gray) x 5 degradations = 60 pairs around 512 px.

    Args:
        root: the folder to write into.
        limit: stop after the photo that reaches this many pairs.
        prepare: applied to each photo before its degradations (e.g. a square RGB crop).

    Returns:
        The number of pairs written.
    """
    count = 0
    for index, name in enumerate(PHOTOS):
        stem = Path(name).stem
        image = make_demo_data.load_photo(name)
        if prepare is not None:
            image = prepare(image)
        outputs = {
            f"denoise/{stem}.png": make_demo_data.denoise_output(image, index),
            f"sr_x2/{stem}.png": make_demo_data.super_resolution_output(image, 2),
            f"sr_x4/{stem}.png": make_demo_data.super_resolution_output(image, 4),
        }
        for key, output in outputs.items():
            make_demo_data.save(root / "reference" / key, image)
            make_demo_data.save(root / "output" / key, output)
            count += 1
        for quality in (20, 50):
            make_demo_data.save(root / "reference" / f"jpeg_q{quality}/{stem}.png", image)
            target = root / "output" / f"jpeg_q{quality}/{stem}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(make_demo_data.jpeg_bytes(image, quality))
            count += 1
        if limit and count >= limit:
            break
    return count


def build_square_dataset(root: Path, side: int, photos: int | None = None) -> int:
    """`build_dataset` with every photo cropped to side x side RGB, of the first `photos` photos (default
    all); returns the pair count."""
    limit = photos * PAIRS_PER_PHOTO if photos else None
    return build_dataset(
        root, limit=limit, prepare=lambda photo: ImageOps.fit(photo.convert("RGB"), (side, side))
    )


def scaled_dataset(ref_dir: Path, out_dir: Path, root: Path, copies: int) -> tuple[Path, Path]:
    """`copies` copies of both folders as root/reference/copy-{i}/ and root/output/copy-{i}/ (hard links
    where the file system allows): the same pairs `copies` times over, paired the same way.

    Returns:
        (root/reference, root/output); an existing root/reference is taken as made already.
    """
    targets = root / "reference", root / "output"
    if targets[0].exists():
        return targets
    for source, target in zip((ref_dir, out_dir), targets, strict=True):
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            for copy in range(copies):
                link_or_copy(path, target / f"copy-{copy}" / path.relative_to(source))
    return targets


def dataset_folders(root: Path, given: tuple[Path, Path] | None, limit: int | None) -> tuple[Path, Path]:
    """The folders to benchmark: `given` (reference, output), or the photo dataset built under `root`
    (`build_dataset` with `limit`, unless already there).

    Raises:
        SystemExit: a given folder is not a directory.
    """
    if given:
        for folder in given:
            if not folder.is_dir():
                raise SystemExit(f"--data: {folder} is not a directory")
        return given[0], given[1]
    if not (root / "reference").exists():
        build_dataset(root, limit=limit)
    return root / "reference", root / "output"


def list_pairs(ref_dir: Path, out_dir: Path) -> list[PairPaths]:
    """The pairs of two folders, paired by key as `iqa score` pairs them."""
    pairing = discover_pairs(ref_dir, out_dir)
    return [PairPaths(p.key, str(p.ref_path), str(p.out_path)) for p in pairing.pairs]


def describe_dataset(pairs: list[PairPaths]) -> str:
    """One line: how many pairs, the long sides of the references, how many are gray."""
    sizes, gray = [], 0
    for pair in pairs:
        with Image.open(pair.ref) as image:
            sizes.append(max(image.size))
            gray += image.mode == "L"
    return (
        f"{len(pairs)} pairs, long side {min(sizes)}-{max(sizes)} px "
        f"(median {statistics.median(sizes):.0f}), "
        f"{gray} gray, {len(pairs) - gray} RGB"
    )


def seeded_alexnet(torch_home: Path) -> Path:
    """An AlexNet backbone made with `torch.manual_seed(0)`, written once to `torch_home/alexnet-seeded.pth`
    (returned: what `iqa score --lpips-weights` is given) and linked where torchvision's cache under
    `torch_home` looks for it, so the `lpips` package loads the same weights without a download. The pipeline
    refuses the seeded file under torchvision's name, whose hash prefix it does not have."""
    path = torch_home / SEEDED_ALEXNET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    cached = torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    if not cached.exists():
        link_or_copy(path, cached)
    return path


def link_or_copy(source: Path, destination: Path) -> None:
    """Put `source` at `destination` (folders made): a hard link where the file system allows, else a copy."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
