"""All-pairs metric matrices of two blocks of common-size images: per-image work once, then (Ba, Bb) values.

* `ssim`: per-image blurred means and variances; per pair only the blurred cross product (exactly the SSIM of
  `pipeline.metrics.ssim`, Wang et al. 2004).
* `psnr`: squared Euclidean distances between the flattened images (float64), `10 log10(1 / MSE)`.
* `lpips`: LPIPS v0.1 is a sum over layers of `sum_c w_c mean_hw (f_a - f_b)^2` of unit-normalised features,
  the squared Euclidean distance between per-image embeddings `f * sqrt(w_c / (H W))`.
* `ms_ssim`: `pipeline.metrics.ms_ssim` on the broadcast pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.metrics.lpips_network import LpipsNetwork, unit_normalize
from pipeline.metrics.perceptual import trunk_features
from pipeline.metrics.ssim import K1, K2, ms_ssim

PAIR_CHUNK_VALUES = 200_000


@dataclass
class SSIMStats:
    """Per-image SSIM statistics, each `(B, 3, S', S')` with `S' = S - 10` (valid Gaussian filtering)."""

    centred: torch.Tensor
    mu: torch.Tensor
    mu_centred: torch.Tensor
    sigma: torch.Tensor
    band: torch.Tensor


def band_matrix(size: int, window: torch.Tensor) -> torch.Tensor:
    """`(size - 10, size)` banded matrix G with `G @ X @ G.T` = the separable 'valid' Gaussian blur of X."""
    taps = window.numel()
    band = torch.zeros(size - taps + 1, size, dtype=window.dtype, device=window.device)
    for row in range(size - taps + 1):
        band[row, row : row + taps] = window
    return band


def _blur(images: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """'valid' Gaussian blur of `(..., S, S)` as two matrix products."""
    return band @ images @ band.T


def ssim_stats(images: torch.Tensor, window: torch.Tensor) -> SSIMStats:
    """`(B, 3, S, S)` in [0, 1] -> per-image means and variances; each image is centred by its own mean."""
    band = band_matrix(images.shape[-1], window)
    mean = images.flatten(2).mean(dim=2)[:, :, None, None]
    centred = images - mean
    mu_centred = _blur(centred, band)
    sigma = _blur(centred * centred, band) - mu_centred * mu_centred
    return SSIMStats(centred, mu_centred + mean, mu_centred, sigma, band)


def ssim_matrix(a: SSIMStats, b: SSIMStats, *, diagonal: bool = False) -> torch.Tensor:
    """SSIM (data_range 1) of every pair; `diagonal` computes only the entries right of the diagonal.

    Returns:
        `(Ba, Bb)` float64; entries not computed are NaN.
    """
    c1, c2 = K1**2, K2**2
    count_a, count_b = a.centred.shape[0], b.centred.shape[0]
    out = torch.full((count_a, count_b), float("nan"), dtype=torch.float64)
    chunk = max(1, PAIR_CHUNK_VALUES // a.centred[0].numel())
    for i in range(count_a):
        first = i + 1 if diagonal else 0
        for start in range(first, count_b, chunk):
            part = slice(start, min(count_b, start + chunk))
            cross = _blur(a.centred[i : i + 1] * b.centred[part], a.band)
            sigma_xy = cross - a.mu_centred[i : i + 1] * b.mu_centred[part]
            cs_map = (2 * sigma_xy + c2) / (a.sigma[i : i + 1] + b.sigma[part] + c2)
            mu_x, mu_y = a.mu[i : i + 1], b.mu[part]
            luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
            out[i, part] = (luminance * cs_map).flatten(2).mean(dim=2).mean(dim=1).double()
    return out


def ms_ssim_matrix(
    a: torch.Tensor, b: torch.Tensor, window: torch.Tensor, *, scales: int, diagonal: bool = False
) -> torch.Tensor:
    """MS-SSIM (data_range 1) of every pair of `(Ba, 3, S, S)` and `(Bb, 3, S, S)`; `(Ba, Bb)` float64."""
    out = torch.full((a.shape[0], b.shape[0]), float("nan"), dtype=torch.float64)
    chunk = max(1, PAIR_CHUNK_VALUES // a[0].numel())
    for i in range(a.shape[0]):
        first = i + 1 if diagonal else 0
        for start in range(first, b.shape[0], chunk):
            part = b[start : start + chunk]
            x = a[i : i + 1].expand(part.shape[0], -1, -1, -1)
            values = ms_ssim(x, part, data_range=1.0, scales=scales, window=window)
            out[i, start : start + part.shape[0]] = values.double()
    return out


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances of `(Ba, D)` and `(Bb, D)` rows, summed pairwise (no Gram cancellation)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()


def psnr_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (data_range 1, dB) of every pair of `(Ba, 3, S, S)` and `(Bb, 3, S, S)`; `(Ba, Bb)` float64."""
    flat_a, flat_b = a.flatten(1).double(), b.flatten(1).double()
    mse = squared_distances(flat_a, flat_b) / flat_a.shape[1]
    return 10 * torch.log10(1.0 / mse)


def lpips_embeddings(images: torch.Tensor, network: LpipsNetwork) -> torch.Tensor:
    """`(B, 3, S, S)` in [0, 1] -> `(B, D)` embeddings whose squared distances are LPIPS v0.1 values.

    Each layer's unit-normalised features are weighted by `sqrt(w_c / (H W))` (the linear layer's
    non-negative 1x1 weights), so `sum_c w_c mean_hw (f_a - f_b)^2 = |e_a - e_b|^2` summed over layers.
    """
    outputs = trunk_features(network, network.scaling_layer(2 * images - 1))
    parts = []
    for layer, lin in zip(outputs, network.lins, strict=True):
        weight = lin.model[-1].weight.reshape(1, -1, 1, 1)
        features = unit_normalize(layer)
        scale = torch.sqrt(weight / (features.shape[2] * features.shape[3]))
        parts.append((features * scale).flatten(1))
    return torch.cat(parts, dim=1)


def lpips_matrix(a: torch.Tensor, b: torch.Tensor, network: LpipsNetwork) -> torch.Tensor:
    """LPIPS of every pair of `(Ba, 3, S, S)` and `(Bb, 3, S, S)` images; `(Ba, Bb)` float64."""
    return squared_distances(lpips_embeddings(a, network), lpips_embeddings(b, network)).double()
