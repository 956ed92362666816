"""Where a pair is worst: the window of a badness map with the highest mean, shown as 1:1 crops in the report.

Two maps rate each pixel of an aligned pair, higher meaning worse:

- `squared_error`: the squared error averaged over channels. Its worst window is where PSNR and MSE lose most.
- `dissimilarity`: 1 - the SSIM map (11x11 Gaussian windows, each value placed at its window's centre). Its
  worst window is the region of lowest local SSIM. It stands for SSIM, for MS-SSIM (whose finest scale is
  this map) and, as a documented proxy, for LPIPS: LPIPS reacts to lost texture and structure (blur,
  ringing, staircasing), which local SSIM finds and the squared error under-weights next to a few large
  pixel errors. The report says so next to the crops.

`worst_window(badness)` is the `CROP_SIDE` x `CROP_SIDE` window with the highest mean badness;
`worst_window(candidate - baseline)` is where a candidate got most worse than its baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.choices import Choice
from pipeline.metrics.ssim import WINDOW_SIZE, ssim_map

CROP_SIDE = 96


class RegionKind(Choice):
    """The map a region is chosen on."""

    ERROR = "error"  # highest local squared error
    STRUCTURE = "structure"  # lowest local SSIM


REGION_KINDS: dict[str, RegionKind] = {
    "psnr": RegionKind.ERROR,
    "mse": RegionKind.ERROR,
    "ssim": RegionKind.STRUCTURE,
    "ms_ssim": RegionKind.STRUCTURE,
    "lpips": RegionKind.STRUCTURE,
}
PROXY_METRICS = frozenset({"lpips"})  # metrics whose region is chosen on another metric's map


def region_kind(metric: str) -> RegionKind:
    """The map that locates where `metric` is worst (squared error for metrics it does not name).

    Example:
        >>> str(region_kind("psnr")), str(region_kind("lpips"))
        ('error', 'structure')
    """
    return REGION_KINDS.get(metric, RegionKind.ERROR)


@dataclass(frozen=True)
class Window:
    """A rectangle of an image in pixels: rows `top:top + height`, columns `left:left + width`."""

    top: int
    left: int
    height: int
    width: int

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, ...) -> (height, width, ...)."""
        return pixels[self.top : self.top + self.height, self.left : self.left + self.width]

    def overlap(self, other: Window) -> float:
        """The area both windows share over the smaller one's area, 0 to 1.

        Example:
            >>> Window(0, 0, 96, 96).overlap(Window(48, 0, 96, 96))
            0.5
        """
        rows = min(self.top + self.height, other.top + other.height) - max(self.top, other.top)
        cols = min(self.left + self.width, other.left + other.width) - max(self.left, other.left)
        smaller = min(self.height * self.width, other.height * other.width)
        return max(0, rows) * max(0, cols) / smaller


def squared_error(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Squared error averaged over channels: (H, W, C) x2 -> (H, W), in squared data units."""
    return ((out - ref) ** 2).mean(axis=2)


def local_ssim(ref: np.ndarray, out: np.ndarray, data_range: float) -> np.ndarray | None:
    """SSIM map at full resolution: (H, W, C) x2 -> (H - 10, W - 10); None when a side < 11.

    Computed in float32: it places a window and colours a map, it is not a score.
    """
    if min(ref.shape[:2]) < WINDOW_SIZE:
        return None
    x = torch.from_numpy(np.ascontiguousarray(ref.transpose(2, 0, 1)))[None].to(torch.float32)
    y = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))[None].to(torch.float32)
    with torch.inference_mode():
        return ssim_map(x, y, data_range=data_range)[0].numpy().astype(np.float64)


def full_size(values: np.ndarray) -> np.ndarray:
    """A 'valid' SSIM map (H - 10, W - 10) -> (H, W): each value at its window's centre, edges repeated."""
    return np.pad(values, WINDOW_SIZE // 2, mode="edge")


def dissimilarity(values: np.ndarray) -> np.ndarray:
    """1 - SSIM at each window's centre: a 'valid' SSIM map (H - 10, W - 10) -> (H, W), 0 on the 5 px edge
    where no window is centred (a crop there is not made worse by values SSIM never saw)."""
    return np.pad(1.0 - values, WINDOW_SIZE // 2, mode="constant", constant_values=0.0)


def _search_area(shape: tuple[int, int], border: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image without `border` px on each side; the whole image when
    nothing would be left."""
    height, width = shape
    if border <= 0 or min(height, width) <= 2 * border:
        return 0, 0, height, width
    return border, border, height - 2 * border, width - 2 * border


def worst_window(badness: np.ndarray, side: int = CROP_SIDE, border: int = 0) -> Window:
    """The `side` x `side` window (smaller when the image is) with the highest mean badness.

    Args:
        badness: (H, W) map, higher is worse; NaN counts as 0.
        side: Window side in pixels.
        border: Pixels on each edge the window stays out of (the convention's crop), when the image is
            large enough.

    Returns:
        The window in image coordinates; ties go to the top-most, then left-most window.

    Example:
        >>> badness = np.zeros((200, 300)); badness[120:140, 30:50] = 1.0
        >>> window = worst_window(badness, side=96)
        >>> window.top <= 120 and window.top + 96 >= 140 and window.left <= 30 and window.left + 96 >= 50
        True
    """
    top, left, height, width = _search_area(badness.shape, border)
    area = np.nan_to_num(badness[top : top + height, left : left + width].astype(np.float64), nan=0.0)
    rows, cols = min(side, height), min(side, width)
    sums = window_sums(area, rows, cols)
    row, col = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return Window(top + int(row), left + int(col), rows, cols)


def window_sums(values: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The sum of every `rows` x `cols` window lying inside `values`, from a summed-area table.

    Args:
        values: (H, W) float64.
        rows, cols: the window's height and width, at most H and W.

    Returns:
        (H - rows + 1, W - cols + 1): [i, j] sums values[i : i + rows, j : j + cols].

    Example:
        >>> window_sums(np.arange(12.0).reshape(3, 4), 2, 3)
        array([[18., 24.],
               [42., 48.]])
    """
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1))
    np.cumsum(np.cumsum(values, axis=0), axis=1, out=table[1:, 1:])
    return table[rows:, cols:] - table[:-rows, cols:] - table[rows:, :-cols] + table[:-rows, :-cols]
