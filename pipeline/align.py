"""Bring a (reference, output) pair of decoded images to one shape, channel count and data range."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.choices import SizeMismatch
from pipeline.errors import ImageError, UsageError
from pipeline.images import DecodedImage


@dataclass
class AlignedPair:
    """A pair ready for the metrics.

    Attributes:
        ref: `(H, W, C)` float64 reference pixels, in units of the reference data range.
        out: `(H, W, C)` float64 output pixels, same shape and units as `ref`.
        data_range: The reference data range (255.0, 65535.0 or the explicit float range).
        warnings: What was changed to make the pair comparable.
    """

    ref: np.ndarray
    out: np.ndarray
    data_range: float
    warnings: list[str] = field(default_factory=list)


def align_pair(
    ref: DecodedImage, out: DecodedImage, *, size_mismatch: str = "error", as_float64: bool = True
) -> AlignedPair:
    """Align an output image to its reference.

    The output is rescaled into the reference data range when the two differ, a gray image is replicated
    to 3 channels when the other is RGB, and sizes are reconciled by `size_mismatch`. Nothing else changes:
    the arrays are the stored values as float64.

    Args:
        ref: Reference image, pixels `(H, W, C)`.
        out: Output image, pixels `(H', W', C')`.
        size_mismatch: "error" raises when sizes differ, "crop" crops both top-left to the common size,
            "resize" resizes the output to the reference size (bicubic, clipped to the data range).
        as_float64: return float64 arrays; False keeps the stored dtype (8x less memory for 8-bit images)
            wherever no rescaling or resizing was needed, for consumers that convert to float themselves.

    Returns:
        The aligned pair with both arrays of shape `(H, W, max(C, C'))` (common size for "crop").

    Raises:
        UsageError: `size_mismatch` is not one of "error", "crop", "resize".
        ImageError: Sizes differ under "error", or an image has an unsupported channel count.
    """
    if size_mismatch not in SizeMismatch.values():
        raise UsageError(
            f"unknown size-mismatch policy {size_mismatch!r}; "
            f"choose one of {', '.join(SizeMismatch.values())}"
        )
    warnings: list[str] = []
    data_range = float(ref.data_range)
    ref_pixels = ref.pixels.astype(np.float64) if as_float64 else ref.pixels
    out_pixels = out.pixels.astype(np.float64) if as_float64 else out.pixels
    if out.data_range != ref.data_range:
        out_pixels = out_pixels * (data_range / out.data_range)
        warnings.append(
            f"output data range {_describe_range(out)} rescaled to "
            f"the reference data range {_describe_range(ref)}"
        )
    ref_pixels, out_pixels = _match_channels(ref, out, ref_pixels, out_pixels, warnings)
    if ref_pixels.shape[:-1] != out_pixels.shape[:-1]:
        ref_pixels, out_pixels = _match_size(ref, out, ref_pixels, out_pixels, size_mismatch, warnings)
    return AlignedPair(ref_pixels, out_pixels, data_range, warnings)


def _size_text(image: DecodedImage) -> str:
    """'WxH' for images, 'WxHxD' for volumes."""
    size = f"{image.width}x{image.height}"
    return size if image.depth is None else f"{size}x{image.depth}"


def _describe_range(image: DecodedImage) -> str:
    kind = f"{image.bit_depth}-bit" if image.pixels.dtype.kind == "u" else f"float{image.bit_depth}"
    return f"{image.data_range:g} ({kind})"


def _match_channels(
    ref: DecodedImage, out: DecodedImage, ref_pixels: np.ndarray, out_pixels: np.ndarray, warnings: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    for image in (ref, out):
        if image.pixels.ndim not in (3, 4) or image.channels not in (1, 3):
            raise ImageError(
                f"{image.path} has pixel shape {image.pixels.shape}; expected (H, W, 1|3) or (D, H, W, 1|3)"
            )
    if ref.pixels.ndim != out.pixels.ndim:
        volume, flat = (ref, out) if ref.pixels.ndim == 4 else (out, ref)
        raise ImageError(
            f"{volume.path} is a volume but {flat.path} is a 2-D image; pair volumes with volumes"
        )
    if ref.channels == 3 and out.channels == 1:
        warnings.append("output is grayscale, reference RGB: gray replicated to 3 channels")
        return ref_pixels, np.repeat(out_pixels, 3, axis=-1)
    if ref.channels == 1 and out.channels == 3:
        warnings.append("reference is grayscale, output RGB: gray replicated to 3 channels")
        return np.repeat(ref_pixels, 3, axis=-1), out_pixels
    return ref_pixels, out_pixels


def _match_size(
    ref: DecodedImage,
    out: DecodedImage,
    ref_pixels: np.ndarray,
    out_pixels: np.ndarray,
    policy: str,
    warnings: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    ref_size = _size_text(ref)
    out_size = _size_text(out)
    if policy == SizeMismatch.ERROR:
        raise ImageError(
            f"size mismatch: reference {ref.path} is {ref_size} and output {out.path} is {out_size} "
            "(width x height); use --size-mismatch crop|resize to crop both to the common size "
            "or resize the output to the reference"
        )
    if policy == SizeMismatch.CROP:
        sides = zip(ref_pixels.shape[:-1], out_pixels.shape[:-1], strict=True)
        common = tuple(slice(0, min(a, b)) for a, b in sides)
        warnings.append(
            f"sizes differ (reference {ref_size}, output {out_size}): "
            f"both cropped top-left to {'x'.join(str(c.stop) for c in reversed(common))}"
        )
        return ref_pixels[common].copy(), out_pixels[common].copy()
    if ref_pixels.ndim == 4:
        raise ImageError(
            f"size mismatch between volumes {ref.path} ({ref_size}) and {out.path} ({out_size}); "
            "resizing volumes is not supported, use --size-mismatch crop"
        )
    warnings.append(f"output resized from {out_size} to the reference size {ref_size} (bicubic)")
    resized = _resize_bicubic(out_pixels.astype(np.float64), ref.height, ref.width, float(ref.data_range))
    return ref_pixels, resized


def _resize_bicubic(pixels: np.ndarray, height: int, width: int, data_range: float) -> np.ndarray:
    """Resize `(H', W', C)` float64 pixels to `(height, width, C)`, clipped to `[0, data_range]`."""
    batch = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(batch, size=(height, width), mode="bicubic", align_corners=False)
    return np.ascontiguousarray(resized[0].permute(1, 2, 0).clamp(0.0, data_range).numpy())
