"""Files read for display in the report: integrity-checked decoding, alignment, 8-bit pixels, colour maps.

Images are read and decoded by `pipeline.images` (the only module that opens image files) and aligned by
`pipeline.align.align_pair` with `size_mismatch="crop"`. Given the SHA-256 a run recorded for a file, it is
decoded only when its bytes still hash to it: a file regenerated in place since that run (or removed) raises
`ImageError` saying so, and the report shows that reason instead of today's pixels under the run's numbers.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from pipeline.align import AlignedPair, align_pair
from pipeline.errors import ImageError, IQAError
from pipeline.images import DecodedImage, decode_image, read_image_file
from pipeline.locations import is_url, locate

JPEG_QUALITY = 82
ERROR_COLORMAP = "inferno"
SSIM_COLORMAP = "viridis"
ERROR_PERCENTILE = 99.5
_NOTE_LENGTH = 160
CHANGED_NOTE = "file changed since that run (sha256 differs)"
GONE_NOTE = "file no longer exists"


def short_reason(exc: BaseException) -> str:
    """An exception's message, cut to a length that fits under a picture."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _NOTE_LENGTH else text[: _NOTE_LENGTH - 1] + "…"


def data_uri(payload: bytes, mime: str) -> str:
    """`data:MIME;base64,...` of some bytes."""
    return f"data:{mime};base64," + base64.b64encode(payload).decode("ascii")


def jpeg_uri(pixels: np.ndarray, side: int) -> str:
    """(H, W) or (H, W, 3) uint8 -> JPEG data URI, downscaled to `side` px on the long side."""
    image = Image.fromarray(pixels)
    scale = side / max(image.width, image.height)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return data_uri(buffer.getvalue(), "image/jpeg")


def to_uint8(pixels: np.ndarray, data_range: float) -> np.ndarray:
    """(H, W, C) float in data units -> (H, W) or (H, W, 3) uint8."""
    scaled = np.clip(pixels / data_range, 0.0, 1.0) * 255.0
    image = scaled.round().astype(np.uint8)
    return image[:, :, 0] if image.shape[2] == 1 else image


def palette(colormap: str) -> list[int]:
    """The 256 colours of a matplotlib colormap as a flat [r, g, b, ...] PNG palette."""
    from matplotlib import colormaps  # a heavy library, imported when the first map is drawn

    colours = colormaps[colormap](np.linspace(0.0, 1.0, 256))[:, :3]
    return (colours * 255).round().astype(np.uint8).flatten().tolist()


def map_levels(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) float -> (H, W) uint8 levels 0..255 of a colour scale from `vmin` to `vmax` (clipped)."""
    span = vmax - vmin if vmax > vmin else 1.0
    return (np.clip((values - vmin) / span, 0.0, 1.0) * 255).round().astype(np.uint8)


def error_map(pair: AlignedPair) -> np.ndarray:
    """Mean absolute error over channels in data units, (H, W)."""
    return np.abs(pair.out - pair.ref).mean(axis=2)


def error_scale(errors: np.ndarray, data_range: float) -> float:
    """Upper end of the heatmap scale: a high percentile of the error, never 0."""
    high = float(np.percentile(errors, ERROR_PERCENTILE)) if errors.size else 0.0
    return high if high > 0 else data_range / 255.0


@dataclass(frozen=True)
class ReadOptions:
    """How the run read and scored its files, so the pictures decode the same way.

    Attributes:
        data_range: The float data range of .npy arrays (None: from the bit depth).
        volume: Whether .npy arrays are volumes (the report shows the middle slice).
        storage_options: For files named by URLs; never read from or written to a run.
        border: Pixels the convention crops from each edge before scoring; regions are searched inside.
    """

    data_range: float | None = None
    volume: bool = False
    storage_options: dict | None = None
    border: int = 0

    @classmethod
    def from_manifest(cls, manifest: dict, storage_options: dict | None = None) -> ReadOptions:
        config = manifest.get("config") or {}
        convention = manifest.get("convention")
        border = convention.get("crop") if isinstance(convention, dict) else None
        return cls(config.get("data_range"), bool(config.get("volumes")), storage_options, int(border or 0))


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


def read_or_reason(path: str, options: ReadOptions, sha256: str | None) -> DecodedImage | str:
    """The decoded file, or why no picture can be made of it."""
    try:
        return read_for_display(path, options, sha256)
    except Exception as exc:
        return short_reason(exc)


def aligned_or_reason(
    reference: DecodedImage, path: str, options: ReadOptions, sha256: str | None
) -> AlignedPair | str:
    """The output aligned to the reference (top-left crop when sizes differ), or why it cannot be."""
    try:
        return align_pair(reference, read_for_display(path, options, sha256), size_mismatch="crop")
    except Exception as exc:
        return short_reason(exc)
