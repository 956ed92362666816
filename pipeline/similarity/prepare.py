"""Images of `iqa similar` brought to a common size, inside the workers, cached per worker process.

Common-size policy: decoded by `pipeline.images.read_image`, converted to RGB (gray replicated to 3 channels),
scaled to [0, 1] by the data range, resized with antialiased bicubic interpolation so that the SHORT side
equals `size`, then centre-cropped to `size x size` (the aspect ratio is kept up to that crop).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import IQAError
from pipeline.images import read_image

CACHE_BYTES = 512 * 2**20
SIZE_POLICY = (
    "decoded, RGB (gray replicated), scaled to [0, 1], bicubic resize (antialiased) so that the short side "
    "equals SIZE, centre crop to SIZE x SIZE (aspect ratio kept up to the crop)"
)


def prepare_image(path: str, size: int) -> torch.Tensor:
    """Decode one file and apply the common-size policy.

    Returns:
        `(3, size, size)` float32 in [0, 1].

    Raises:
        IQAError: the file cannot be decoded (`ImageError`) or needs an explicit data range.
    """
    decoded = read_image(path)
    pixels = torch.from_numpy(decoded.pixels.astype(np.float32) / np.float32(decoded.data_range))
    image = pixels.permute(2, 0, 1).unsqueeze(0)
    if image.shape[1] == 1:
        image = image.expand(-1, 3, -1, -1)
    height, width = image.shape[2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    if new_size != (height, width):
        image = F.interpolate(image, size=new_size, mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return image[0, :, top : top + size, left : left + size].clamp(0.0, 1.0).contiguous()


class PreparedCache:
    """LRU cache of prepared images (or their failure reasons), bounded in bytes, one per worker process."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[tuple[str, int], torch.Tensor | str] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: str, size: int) -> torch.Tensor | str:
        """The prepared `(3, size, size)` tensor of `path`, or the reason it cannot be used."""
        key = (path, size)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        try:
            entry: torch.Tensor | str = prepare_image(path, size)
        except IQAError as exc:
            entry = str(exc)
        except Exception as exc:
            entry = f"{path}: {type(exc).__name__}: {exc}"
        with self.lock:
            if key not in self.entries:
                self.entries[key] = entry
                self.bytes += _nbytes(entry)
            while self.bytes > self.max_bytes and len(self.entries) > 1:
                _, dropped = self.entries.popitem(last=False)
                self.bytes -= _nbytes(dropped)
        return entry


def _nbytes(entry: torch.Tensor | str) -> int:
    return entry.numel() * entry.element_size() if isinstance(entry, torch.Tensor) else len(entry)


_CACHE = PreparedCache()  # one per worker process


def load_block(paths: tuple[str, ...], size: int) -> tuple[list[int], torch.Tensor | None, dict[str, str]]:
    """Prepared images of a block (from this process's cache): positions that loaded, their `(B, 3, S, S)`
    stack, and failures by path."""
    positions, tensors, failures = [], [], {}
    for position, path in enumerate(paths):
        entry = _CACHE.get(path, size)
        if isinstance(entry, str):
            failures[path] = entry
        else:
            positions.append(position)
            tensors.append(entry)
    return positions, (torch.stack(tensors) if tensors else None), failures
