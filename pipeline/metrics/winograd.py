"""Winograd minimal filtering for stride-1 "same" convolutions (Lavin & Gray, CVPR 2016).

F(m x m, r x r) computes an m x m output tile of an r x r convolution from an (m + r - 1)^2 input tile with
(m + r - 1)^2 multiplications instead of m^2 r^2: for F(4x4, 3x3) 36 instead of 144, for F(4x4, 5x5) 64
instead of 400. In matrix form, per tile d, filter g and channel pair,

    Y = A^T [(G g G^T) * (B^T d B)] A

with Cook-Toom matrices built from interpolation points (`winograd_transform`). Summed over input channels
the elementwise products become one matrix product per transformed point, (tiles x Cin) @ (Cin x Cout),
which is where the time goes. `WinogradConv2d` transforms a `torch.nn.Conv2d`'s weights once and runs the
rest in eager PyTorch, in chunks of tiles so every transformed buffer stays below `CHUNK_VALUES` values.

Choices, measured on one core of the target machine (AMD EPYC, AVX-512; scripts/bench_winograd.py):
- The products run as one grouped 1x1 convolution in oneDNN with prepacked weights (~240 GFLOP/s, as fast
  as its direct convolution), not `torch.bmm`: MKL's sgemm reaches only ~100 GFLOP/s on this CPU, which would
  eat most of the 4x fewer multiplications. Elsewhere (no oneDNN, float64, CUDA) `F.conv2d` runs them.
- `OUTPUT_TILE`: F(4x4, 3x3) and F(4x4, 5x5). For AlexNet at 512 px, F(2x2, 3x3) was 1.5x slower, F(6x6, 3x3)
  1.3x slower and less accurate; for 5x5, F(2x2) and F(3x3) were 2.7x and 1.7x slower than F(4x4). Errors
  (max |diff| to float64 / max |output|): 3-5e-6, against 0.2-2e-6 for oneDNN's direct convolution.
- `CHUNK_VALUES`: 1M values (4 MB) per transformed buffer, i.e. 64-85 tiles for AlexNet's layers. Half of it
  was 1.3-1.5x slower (thinner products); 4x more was up to 1.7x slower on conv2 (buffers out of cache, and
  beyond glibc's mmap threshold unless `pipeline.allocator` tuned it), 0-4% faster on conv3-conv5.

Example:
    >>> conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    >>> prepared = WinogradConv2d.from_conv(conv)
    >>> x = torch.rand(2, 8, 20, 30)
    >>> torch.allclose(prepared(x), conv(x), atol=1e-5)
    True
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.metrics.checks import needs_grad

FINITE_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)
OUTPUT_TILE = {3: 4, 5: 4}
MIN_CHANNELS = {3: 192, 5: 64}
CHUNK_VALUES = 1 << 20
PACKED_MIN_TILES = 64
PACKED_SHAPES = 3  # packings kept per layer (of 7 `packing_shape` buckets); each is as large as the layer's
# transformed weights (37 MB for AlexNet's conv2-conv5). Balanced chunks give an image 1-2 buckets per layer.


@dataclass(frozen=True)
class WinogradTransform:
    """Cook-Toom matrices of F(m, r) in float64, alpha = m + r - 1 points (the last one at infinity).

    Attributes:
        output: m, the output tile side.
        kernel: r, the filter side.
        data: B^T, (alpha, alpha): input tile -> transformed points.
        filter: G, (alpha, r): filter -> transformed points.
        inverse: A^T, (m, alpha): products at the points -> output tile.
    """

    output: int
    kernel: int
    data: Tensor
    filter: Tensor
    inverse: Tensor

    @property
    def alpha(self) -> int:
        return self.output + self.kernel - 1

    def correlate(self, d: Tensor, g: Tensor) -> Tensor:
        """1-D F(m, r): (alpha,) input, (r,) filter -> (m,) with y_k = sum_j g_j d_(k+j)."""
        return self.inverse @ ((self.filter @ g) * (self.data @ d))


def _powers(points: list[float], count: int) -> Tensor:
    """Rows [p^0 .. p^(count-1)] for the finite points, then [0 .. 0, 1] for the point at infinity."""
    finite = torch.tensor(points, dtype=torch.float64).unsqueeze(1) ** torch.arange(count)
    infinity = torch.zeros(1, count, dtype=torch.float64)
    infinity[0, -1] = 1.0
    return torch.cat([finite, infinity])


def winograd_transform(output: int, kernel: int) -> WinogradTransform:
    """Cook-Toom F(output, kernel) on the points 0, 1, -1, 2, -2, 1/2, -1/2 (as many as needed) and infinity.

    Correlation is the transpose of the linear convolution c = V^-1 [(V_m a) * (V_r g)] evaluated at the
    points (V: Vandermonde rows), so A^T = V_m^T, G = V_r and B^T = V^-T. The point 1 makes a column of A^T
    all ones, which is where `WinogradConv2d` adds the bias.
    """
    alpha = output + kernel - 1
    if output < 1 or kernel < 1 or alpha - 1 > len(FINITE_POINTS):
        raise ValueError(
            f"Winograd F({output}, {kernel}) needs {alpha - 1} finite points; "
            f"at most {len(FINITE_POINTS)} are defined ({FINITE_POINTS})."
        )
    points = list(FINITE_POINTS[: alpha - 1])
    vandermonde = _powers(points, alpha)
    return WinogradTransform(
        output=output,
        kernel=kernel,
        data=torch.linalg.inv(vandermonde).T.contiguous(),
        filter=_powers(points, kernel),
        inverse=_powers(points, output).T.contiguous(),
    )


def supports(conv: torch.nn.Module) -> bool:
    """True for a float32 `nn.Conv2d` (not a subclass, whose forward may differ) that `WinogradConv2d`
    runs: 3x3 or 5x5, stride 1, dilation 1, groups 1, zero padding kernel // 2 on every side."""
    return _geometry_supported(conv) and conv.weight.dtype == torch.float32


def pays_off(conv: torch.nn.Conv2d) -> bool:
    """True when Winograd beat oneDNN's direct convolution on one core for these channel counts (measured
    with scripts/bench_winograd.py): from `MIN_CHANNELS[r]` input and output channels. With fewer, the
    products are too thin for the transforms' memory traffic to pay (VGG's 64-channel layers ran 0.6x)."""
    return min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS[conv.kernel_size[0]]


def _geometry_supported(conv: torch.nn.Module) -> bool:
    if type(conv) is not torch.nn.Conv2d:
        return False
    kernel = conv.kernel_size
    return (
        kernel[0] == kernel[1]
        and kernel[0] in OUTPUT_TILE
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and tuple(conv.padding) == (kernel[0] // 2, kernel[1] // 2)
    )


def _onednn_runs(x: Tensor) -> bool:
    """oneDNN's grouped 1x1 convolution with prepacked weights runs the products (float32 CPU only)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.enabled
        and _onednn_operators()
    )


@functools.cache
def _onednn_operators() -> bool:
    """Whether this PyTorch build has the oneDNN operators its CPU compiler uses for fused convolutions,
    and they give `F.conv2d`'s values on a small problem (they are internal to PyTorch, so a build where
    their signature or meaning differs falls back to `F.conv2d` instead of failing or scoring wrongly)."""
    names = ("_convolution_pointwise", "_reorder_convolution_weight")
    if not (torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, n) for n in names)):
        return False
    generator = torch.Generator().manual_seed(0)
    groups, cin, cout, tiles = 2, 3, 4, 5
    weight = torch.randn(groups * cout, cin, 1, 1, generator=generator)
    bias = torch.randn(groups * cout, generator=generator)
    grid = torch.randn(1, 1, tiles, groups * cin, generator=generator).permute(0, 3, 1, 2)
    try:
        with torch.no_grad():
            packed = _reorder(weight, groups, [1, groups * cin, 1, tiles])
            fast = _pointwise(grid, packed, bias, groups)
            expected = F.conv2d(grid, weight, bias, groups=groups)
        return bool(torch.allclose(fast, expected, rtol=1e-5, atol=1e-5))
    except (RuntimeError, TypeError, ValueError):
        return False


def _reorder(weight: Tensor, groups: int, input_size: list[int]) -> Tensor:
    """oneDNN's blocked form of (groups * Cout, Cin, 1, 1) weights for inputs of `input_size`."""
    return torch.ops.mkldnn._reorder_convolution_weight(weight, [0, 0], [1, 1], [1, 1], groups, input_size)


def _pointwise(grid: Tensor, packed: Tensor, bias: Tensor | None, groups: int) -> Tensor:
    """Grouped 1x1 convolution of a channels-last (1, groups * Cin, 1, T) grid with packed weights."""
    return torch.ops.mkldnn._convolution_pointwise(
        grid, packed, bias, [0, 0], [1, 1], [1, 1], groups, "none", [], ""
    )


def packing_shape(tiles: int) -> int:
    """The grid width the weights are packed for: `PACKED_MIN_TILES` for grids at least that wide, else
    the largest power of two <= `tiles`. oneDNN picks its weight blocking by the grid width, and a packing
    made for another width is reordered again on every call (measured up to 60x slower), but one packing
    served every width of the same bucket at full speed (widths 64-128 with the packing for 64, 33-63 with
    the one for 32, ...), so a layer needs at most 7 packings whatever the image sizes."""
    if tiles >= PACKED_MIN_TILES:
        return PACKED_MIN_TILES
    return 1 << (tiles.bit_length() - 1)


class WinogradConv2d:
    """A `torch.nn.Conv2d` (3x3 or 5x5, stride 1, "same" zero padding) prepared for Winograd: call it on
    (N, Cin, H, W) -> (N, Cout, H, W), channels-last, any N, H, W >= 1, no gradients.

    The weights are transformed once, in float64, into (alpha^2 Cout, Cin) and cast to the convolution's
    dtype; the bias rides on the products of one point. Per chunk of tiles: gather the overlapping input
    tiles, B^T d B as two small batched matmuls, the products per point as one grouped 1x1 convolution
    (oneDNN with weights prepacked once per chunk shape for float32 on CPU, `F.conv2d` otherwise), A^T M A as
    two small matmuls, then the crop into the output (with the ReLU when asked).
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, output_tile: int | None = None) -> None:
        """Args:
        weight: (Cout, Cin, r, r) with r = 3 or 5, float32 or float64.
        bias: (Cout,) or None.
        output_tile: m of F(m x m, r x r); `OUTPUT_TILE[r]` by default.
        """
        out_channels, in_channels, kernel, _ = weight.shape
        self.transform = winograd_transform(output_tile or OUTPUT_TILE[kernel], kernel)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dtype = weight.dtype
        with torch.no_grad():
            g = self.transform.filter.to(weight.device)
            u = torch.einsum("ai,ocij,bj->aboc", g, weight.detach().to(torch.float64), g)
            self.weight = u.reshape(self.points * out_channels, in_channels, 1, 1).to(self.dtype).contiguous()
            self.bias = None if bias is None else self._point_bias(bias.detach().to(self.dtype))
        self._data = self.transform.data.to(self.weight)
        self._inverse = self.transform.inverse.to(self.weight)
        self._packed: OrderedDict[int, Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_conv(cls, conv: torch.nn.Conv2d, output_tile: int | None = None) -> WinogradConv2d:
        """Prepare `conv` (see `supports`; float64 is accepted too, for exactness checks)."""
        if not _geometry_supported(conv) or conv.weight.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"Winograd needs a float32/float64 Conv2d with a 3x3 or 5x5 kernel, stride 1, dilation 1, "
                f"groups 1 and zero padding kernel // 2; got {conv!r} ({conv.weight.dtype}). "
                "Run it as an ordinary convolution."
            )
        return cls(conv.weight, conv.bias, output_tile)

    @property
    def points(self) -> int:
        """alpha^2, the transformed points per tile (36 for F(4x4, 3x3), 64 for F(4x4, 5x5))."""
        return self.transform.alpha**2

    def _point_bias(self, bias: Tensor) -> Tensor:
        """The bias at the point (1, 1), whose output transform A^T e e^T A is all ones: (alpha^2 Cout,)."""
        alpha = self.transform.alpha
        one = FINITE_POINTS.index(1.0)
        full = bias.new_zeros(alpha, alpha, self.out_channels)
        full[one, one] = bias
        return full.flatten()

    def __call__(self, x: Tensor, *, relu: bool = False) -> Tensor:
        """(N, Cin, H, W) -> (N, Cout, H, W), channels-last; `relu` applies max(., 0) on the way out."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.dtype != self.dtype:
            raise ValueError(
                f"Winograd convolution expects (N, {self.in_channels}, H, W) {self.dtype} input, "
                f"got {tuple(x.shape)} {x.dtype}."
            )
        if needs_grad(x):
            raise ValueError(
                "Winograd convolution computes no gradients, but its input requires grad; "
                "run the nn.Conv2d itself on the gradient path."
            )
        m = self.transform.output
        batch, _, height, width = x.shape
        rows, cols = math.ceil(height / m), math.ceil(width / m)
        out = x.new_empty(batch, height, width, self.out_channels)
        data, inverse = self._data.to(x.device), self._inverse.to(x.device)
        for chunk in _chunks(batch, rows, cols, self._chunk_tiles()):
            local = _Chunk(0, chunk.images, 0, chunk.rows, 0, chunk.cols)
            tiles = _input_tiles(self._padded_block(x, chunk), local, m, self.transform.alpha)
            products = self._products(_transform_tiles(tiles, data))
            _write_tiles(_inverse_transform(products, inverse, chunk), out, chunk, m, relu)
        return out.permute(0, 3, 1, 2)

    def _padded_block(self, x: Tensor, chunk: _Chunk) -> Tensor:
        """The input a chunk's tiles read, zero-padded: (images, rows m + alpha - m, cols m + alpha - m, C),
        channels-last. Padding per chunk (r // 2 zeros before the image, enough after it for whole tiles)
        keeps the extra memory to a chunk's size: a padded copy of a whole 4096 x 4096 image's conv2 input
        would be 268 MB."""
        m, alpha, pad = self.transform.output, self.transform.alpha, self.transform.kernel // 2
        _, channels, height, width = x.shape
        top, left = chunk.row * m - pad, chunk.col * m - pad
        block = x.new_zeros(chunk.images, chunk.rows * m + alpha - m, chunk.cols * m + alpha - m, channels)
        first_row, last_row = max(0, top), min(height, top + block.shape[1])
        first_col, last_col = max(0, left), min(width, left + block.shape[2])
        if first_row < last_row and first_col < last_col:
            source = x[chunk.image : chunk.image + chunk.images, :, first_row:last_row, first_col:last_col]
            block[:, first_row - top : last_row - top, first_col - left : last_col - left].copy_(
                source.permute(0, 2, 3, 1)
            )
        return block

    def _chunk_tiles(self) -> int:
        return max(1, CHUNK_VALUES // (self.points * max(self.in_channels, self.out_channels)))

    def _products(self, transformed: Tensor) -> Tensor:
        """(T, alpha^2 Cin) transformed tiles -> (T, alpha^2 Cout): one (Cin -> Cout) product per point."""
        tiles = transformed.shape[0]
        grid = transformed.view(1, 1, tiles, -1).permute(0, 3, 1, 2)
        if _onednn_runs(transformed):
            products = _pointwise(grid, self._packed_weight(tiles), self.bias, self.points)
        else:
            weight = self.weight.to(transformed.device)
            bias = None if self.bias is None else self.bias.to(transformed.device)
            products = F.conv2d(grid, weight, bias, groups=self.points)
        return products.permute(0, 2, 3, 1).reshape(tiles, -1)

    def _packed_weight(self, tiles: int) -> Tensor:
        """oneDNN's blocked weights for grids of `tiles` tiles, one packing per `packing_shape` bucket (at
        most `PACKED_SHAPES` kept, least recently used dropped first)."""
        shape = packing_shape(tiles)
        with self._lock:
            packed = self._packed.get(shape)
            if packed is None:
                packed = _reorder(self.weight, self.points, [1, self.points * self.in_channels, 1, shape])
                self._packed[shape] = packed
                if len(self._packed) > PACKED_SHAPES:
                    self._packed.popitem(last=False)
            else:
                self._packed.move_to_end(shape)
            return packed


@dataclass(frozen=True)
class _Chunk:
    """Tiles [image, image + images) x [row, row + rows) x [col, col + cols) of the tile grid."""

    image: int
    images: int
    row: int
    rows: int
    col: int
    cols: int

    @property
    def tiles(self) -> int:
        return self.images * self.rows * self.cols


def _chunks(batch: int, rows: int, cols: int, limit: int) -> Iterator[_Chunk]:
    """Blocks of at most `limit` tiles: whole images when they fit, else bands of tile rows, else pieces of
    a row; bands and pieces are balanced so that the blocks of an image have (nearly) one shape."""
    if rows * cols <= limit:
        images = _balanced(batch, limit // (rows * cols))
        for image in range(0, batch, images):
            yield _Chunk(image, min(images, batch - image), 0, rows, 0, cols)
        return
    span = _balanced(cols, limit)
    height = _balanced(rows, max(1, limit // span))
    for image in range(batch):
        for row in range(0, rows, height):
            for col in range(0, cols, span):
                yield _Chunk(image, 1, row, min(height, rows - row), col, min(span, cols - col))


def _balanced(total: int, most: int) -> int:
    """The smallest step <= `most` that splits `total` into as few pieces as steps of `most` would."""
    pieces = math.ceil(total / most)
    return math.ceil(total / pieces)


def _input_tiles(padded: Tensor, chunk: _Chunk, m: int, alpha: int) -> Tensor:
    """Overlapping alpha x alpha tiles (stride m) of the padded (N, Hp, Wp, C) input: (T, alpha, alpha C)."""
    width, channels = padded.shape[2:]
    image, row, col = padded.stride(0), width * channels, channels
    view = padded.as_strided(
        (chunk.images, chunk.rows, chunk.cols, alpha, alpha, channels),
        (image, m * row, m * col, row, col, 1),
        padded.storage_offset() + chunk.image * image + chunk.row * m * row + chunk.col * m * col,
    )
    return view.reshape(chunk.tiles, alpha, alpha * channels)


def _transform_tiles(tiles: Tensor, data: Tensor) -> Tensor:
    """B^T d B per tile and channel: (T, alpha, alpha C) -> (T, alpha^2 C), points major, channels minor."""
    count, alpha, _ = tiles.shape
    columns = torch.matmul(data, tiles)
    return torch.matmul(data, columns.view(count * alpha, alpha, -1)).view(count, -1)


def _inverse_transform(products: Tensor, inverse: Tensor, chunk: _Chunk) -> Tensor:
    """A^T M A per tile and channel: (T, alpha^2 Cout) -> (images, rows, cols, m, m, Cout)."""
    m, alpha = inverse.shape
    count = products.shape[0]
    rows = torch.matmul(inverse, products.view(count, alpha, -1))
    tiles = torch.matmul(inverse, rows.view(count * m, alpha, -1))
    return tiles.view(chunk.images, chunk.rows, chunk.cols, m, m, -1)


def _write_tiles(tiles: Tensor, out: Tensor, chunk: _Chunk, m: int, relu: bool) -> None:
    """Copy output tiles into (N, H, W, Cout) `out`, cropping the tiles that reach past its edges."""
    _, height, width, channels = out.shape
    top, left = chunk.row * m, chunk.col * m
    full_rows, last_rows = divmod(min(chunk.rows * m, height - top), m)
    full_cols, last_cols = divmod(min(chunk.cols * m, width - left), m)
    row_parts = [(0, full_rows, m), (full_rows, 1, last_rows)]
    col_parts = [(0, full_cols, m), (full_cols, 1, last_cols)]
    image, row, col = out.stride(0), width * channels, channels
    for first_row, count_rows, tile_rows in row_parts:
        for first_col, count_cols, tile_cols in col_parts:
            if not (count_rows and count_cols and tile_rows and tile_cols):
                continue
            source = tiles[
                :,
                first_row : first_row + count_rows,
                first_col : first_col + count_cols,
                :tile_rows,
                :tile_cols,
            ].permute(0, 1, 3, 2, 4, 5)
            target = out.as_strided(
                source.shape,
                (image, m * row, row, m * col, col, 1),
                out.storage_offset()
                + chunk.image * image
                + (top + first_row * m) * row
                + (left + first_col * m) * col,
            )
            if relu:
                torch.clamp_min(source, 0, out=target)
            else:
                target.copy_(source)
