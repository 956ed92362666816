"""Small pictures of a pair for the report: reference, output, absolute-error heatmap, SSIM map.

Images are read and decoded by `pipeline.images` (the only module that opens image files) and aligned by
`pipeline.align.align_pair` with `size_mismatch="crop"`. Given the SHA-256 a run recorded for a file, a
picture is made only when the file's bytes still hash to it: a file regenerated in place since that run (or
removed) becomes a placeholder saying so, never today's pixels under the run's numbers. Every picture becomes
a JPEG data URI of at most `THUMBNAIL_SIDE` pixels on its long side. Any failure becomes a placeholder text,
never an exception.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from pipeline.align import AlignedPair, align_pair
from pipeline.errors import ImageError, IQAError
from pipeline.images import DecodedImage, decode_image, read_image_file
from pipeline.locations import is_url, locate
from pipeline.metrics.ssim import WINDOW_SIZE, ssim_map

THUMBNAIL_SIDE = 160
JPEG_QUALITY = 82
ERROR_COLORMAP = "inferno"
SSIM_COLORMAP = "viridis"
ERROR_PERCENTILE = 99.5
_NOTE_LENGTH = 160
CHANGED_NOTE = "file changed since that run (sha256 differs)"
GONE_NOTE = "file no longer exists"


@dataclass
class Thumbnail:
    """One picture of the report, or the reason it could not be made.

    Attributes:
        label: What it shows (`reference`, `output`, `|error|`, `SSIM map`).
        data_uri: `data:image/jpeg;base64,...`, or None when the picture failed.
        note: The colour scale of a heatmap, or the reason for a missing picture.
    """

    label: str
    data_uri: str | None
    note: str = ""


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _NOTE_LENGTH else text[: _NOTE_LENGTH - 1] + "…"


def _placeholder(label: str, reason: str) -> Thumbnail:
    return Thumbnail(label, None, f"no picture: {reason}")


def jpeg_uri(pixels: np.ndarray, side: int) -> str:
    """(H, W) or (H, W, 3) uint8 -> JPEG data URI, downscaled to `side` px on the long side."""
    image = Image.fromarray(pixels)
    scale = side / max(image.width, image.height)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_uint8(pixels: np.ndarray, data_range: float) -> np.ndarray:
    """(H, W, C) float in data units -> (H, W) or (H, W, 3) uint8."""
    scaled = np.clip(pixels / data_range, 0.0, 1.0) * 255.0
    image = scaled.round().astype(np.uint8)
    return image[:, :, 0] if image.shape[2] == 1 else image


def _shrink_map(values: np.ndarray, side: int) -> np.ndarray:
    """(H, W) float map -> area-averaged (h, w) map with h, w <= side."""
    height, width = values.shape
    scale = side / max(height, width)
    if scale >= 1:
        return values
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(values.astype(np.float32)).resize(size, Image.Resampling.BOX))


def _colour(values: np.ndarray, vmin: float, vmax: float, colormap: str) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 through a matplotlib colormap."""
    from matplotlib import colormaps  # a heavy library, imported when the first heatmap is drawn

    span = vmax - vmin if vmax > vmin else 1.0
    normalised = np.clip((values - vmin) / span, 0.0, 1.0)
    return (colormaps[colormap](normalised)[:, :, :3] * 255).round().astype(np.uint8)


def error_map(pair: AlignedPair) -> np.ndarray:
    """Mean absolute error over channels in data units, (H, W)."""
    return np.abs(pair.out - pair.ref).mean(axis=2)


def error_scale(errors: np.ndarray, data_range: float) -> float:
    """Upper end of the heatmap scale: a high percentile of the error, never 0."""
    high = float(np.percentile(errors, ERROR_PERCENTILE)) if errors.size else 0.0
    return high if high > 0 else data_range / 255.0


def error_thumbnail(pair: AlignedPair, *, vmax: float | None = None, side: int = THUMBNAIL_SIDE) -> Thumbnail:
    """Absolute-error heatmap (inferno, 0 to `vmax` data units; default a high percentile of the error)."""
    try:
        errors = error_map(pair)
        top = error_scale(errors, pair.data_range) if vmax is None else vmax
        picture = _colour(_shrink_map(errors, side), 0.0, top, ERROR_COLORMAP)
        return Thumbnail("|error|", jpeg_uri(picture, side), f"0 (dark) to {top:.3g} (bright), data units")
    except Exception as exc:
        return _placeholder("|error|", _short(exc))


def ssim_thumbnail(pair: AlignedPair, *, side: int = THUMBNAIL_SIDE) -> Thumbnail:
    """SSIM map (viridis, 0 to 1) of the aligned pair, computed on float64 at full resolution."""
    height, width = pair.ref.shape[:2]
    if min(height, width) < WINDOW_SIZE:
        reason = f"image is {width}x{height}, smaller than the {WINDOW_SIZE} px window"
        return _placeholder("SSIM map", reason)
    try:
        x = torch.from_numpy(np.ascontiguousarray(pair.ref.transpose(2, 0, 1)))[None].to(torch.float64)
        y = torch.from_numpy(np.ascontiguousarray(pair.out.transpose(2, 0, 1)))[None].to(torch.float64)
        with torch.inference_mode():
            values = ssim_map(x, y, data_range=pair.data_range)[0].numpy()
        picture = _colour(_shrink_map(values, side), 0.0, 1.0, SSIM_COLORMAP)
        return Thumbnail("SSIM map", jpeg_uri(picture, side), "0 (dark) to 1 (bright)")
    except Exception as exc:
        return _placeholder("SSIM map", _short(exc))


def _image_thumbnail(label: str, pixels: np.ndarray, data_range: float, side: int) -> Thumbnail:
    try:
        return Thumbnail(label, jpeg_uri(to_uint8(pixels, data_range), side))
    except Exception as exc:
        return _placeholder(label, _short(exc))


@dataclass(frozen=True)
class ReadOptions:
    """How the run read its files (float data range, .npy volumes), so the pictures decode the same way."""

    data_range: float | None = None
    volume: bool = False
    storage_options: dict | None = None  # for files named by URLs; never read from or written to a run

    @classmethod
    def from_manifest(cls, manifest: dict, storage_options: dict | None = None) -> ReadOptions:
        config = manifest.get("config") or {}
        return cls(config.get("data_range"), bool(config.get("volumes")), storage_options)


def _exists(path: str, storage_options: dict | None) -> bool:
    try:
        return locate(path, storage_options).exists() if is_url(path) else os.path.exists(path)
    except IQAError:
        return False


def read_for_display(path: str, options: ReadOptions, sha256: str | None = None) -> DecodedImage:
    """Decode one file; a volume is reduced to its middle slice (D // 2).

    Args:
        sha256: the hash a run recorded for the file; when given, the file is decoded only if its bytes
            still hash to it.

    Raises:
        ImageError: `GONE_NOTE` or `CHANGED_NOTE` when the file is not the one the run scored; else what
            `pipeline.images` says about an unreadable file.
    """
    if sha256 is not None and not _exists(path, options.storage_options):
        raise ImageError(GONE_NOTE)
    image_file = read_image_file(path, options.storage_options)
    if sha256 is not None and image_file.sha256 != sha256:
        raise ImageError(CHANGED_NOTE)
    image = decode_image(image_file, data_range=options.data_range, volume=options.volume)
    if image.depth is not None:
        image = replace(image, pixels=image.pixels[image.depth // 2])
    return image


def _read_or_reason(path: str, options: ReadOptions, sha256: str | None) -> tuple[DecodedImage | None, str]:
    """The decoded file, or None and why no picture can be made of it."""
    try:
        return read_for_display(path, options, sha256), ""
    except Exception as exc:
        return None, _short(exc)


def _aligned_or_reason(
    reference: DecodedImage, path: str, options: ReadOptions, sha256: str | None
) -> AlignedPair | str:
    """The output aligned to the reference (top-left crop when sizes differ), or why it cannot be."""
    try:
        return align_pair(reference, read_for_display(path, options, sha256), size_mismatch="crop")
    except Exception as exc:
        return _short(exc)


def pair_thumbnails(
    ref_path: str | None,
    out_path: str | None,
    *,
    ref_sha256: str | None = None,
    out_sha256: str | None = None,
    side: int = THUMBNAIL_SIDE,
    options: ReadOptions = ReadOptions(),
) -> list[Thumbnail]:
    """Reference, output, absolute-error heatmap and SSIM map of one pair.

    Args:
        ref_path: Reference image file.
        out_path: Output image file.
        ref_sha256, out_sha256: the hashes the run recorded; a file that no longer hashes to its recorded
            value gets a placeholder (and so do the maps made from it). None: not checked.
        side: Longest side of each picture in pixels.

    Returns:
        Four thumbnails; any that cannot be made carry a placeholder note instead of a picture.
    """
    labels = ("reference", "output", "|error|", "SSIM map")
    if not ref_path or not out_path:
        return [_placeholder(label, "no file path in the results") for label in labels]
    reference, reason = _read_or_reason(ref_path, options, ref_sha256)
    if reference is None:
        return [_placeholder(label, reason) for label in labels]
    pair = _aligned_or_reason(reference, out_path, options, out_sha256)
    if isinstance(pair, str):
        shown = _image_thumbnail("reference", reference.pixels, reference.data_range, side)
        return [shown, *(_placeholder(label, pair) for label in labels[1:])]
    return [
        _image_thumbnail("reference", pair.ref, pair.data_range, side),
        _image_thumbnail("output", pair.out, pair.data_range, side),
        error_thumbnail(pair, side=side),
        ssim_thumbnail(pair, side=side),
    ]


def _output_pictures(
    label: str, error_label: str, pair: AlignedPair | str, top: float, side: int
) -> tuple[Thumbnail, Thumbnail]:
    """An output and its error heatmap on the shared scale `top`, or two placeholders with the reason."""
    if isinstance(pair, str):
        return _placeholder(label, pair), _placeholder(error_label, pair)
    error = error_thumbnail(pair, vmax=top, side=side)
    error.label = error_label
    return _image_thumbnail(label, pair.out, pair.data_range, side), error


def regression_thumbnails(
    ref_path: str | None,
    baseline_out: str | None,
    candidate_out: str | None,
    *,
    sha256: tuple[str | None, str | None, str | None] = (None, None, None),
    side: int = THUMBNAIL_SIDE,
    options: ReadOptions = ReadOptions(),
) -> list[Thumbnail]:
    """Reference, baseline output, candidate output and both error heatmaps on one shared scale.

    Args:
        sha256: the recorded hashes of the reference and of the baseline's and candidate's outputs (None: not
            checked). A baseline output regenerated in place since the baseline run no longer hashes to its
            recorded value: it gets a placeholder, never today's pixels.

    Returns:
        Five thumbnails; any that cannot be made carry a placeholder note instead of a picture.
    """
    labels = ("reference", "baseline output", "candidate output", "baseline |error|", "candidate |error|")
    if not ref_path or not baseline_out or not candidate_out:
        return [_placeholder(label, "no file path in the results") for label in labels]
    reference, reason = _read_or_reason(ref_path, options, sha256[0])
    if reference is None:
        return [_placeholder(label, reason) for label in labels]
    baseline = _aligned_or_reason(reference, baseline_out, options, sha256[1])
    candidate = _aligned_or_reason(reference, candidate_out, options, sha256[2])
    pairs = [pair for pair in (candidate, baseline) if isinstance(pair, AlignedPair)]
    top = max((error_scale(error_map(pair), pair.data_range) for pair in pairs), default=1.0)
    shown = (pairs[0].ref, pairs[0].data_range) if pairs else (reference.pixels, reference.data_range)
    baseline_pictures = _output_pictures(labels[1], labels[3], baseline, top, side)
    candidate_pictures = _output_pictures(labels[2], labels[4], candidate, top, side)
    return [
        _image_thumbnail("reference", *shown, side),
        baseline_pictures[0],
        candidate_pictures[0],
        baseline_pictures[1],
        candidate_pictures[1],
    ]
