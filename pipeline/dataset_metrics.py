"""FID and KID of the output set against the reference set, reduced from Inception features shard by shard.

Workers return the (n, 2048) float32 features of each shard's ok pairs (`ShardFeatures`: 8 KiB per image,
less than the 32 MiB of one side's sums unless a shard holds over 4096 images). The client folds each shard
in as it finishes (`DatasetAccumulator`) and drops it, so its memory does not grow with the pair count:

* FID (Heusel et al. 2017): per group and side the image count, the sum of the features and the sum of their
  outer products in float64 (`FeatureSums`, 2 x 32 MiB per group); the whole set's sums are the sum of the
  groups'. Then, as torchmetrics' `FrechetInceptionDistance` defines it: each side's mean and unbiased
  covariance, and |mu_r - mu_o|^2 + tr(S_r) + tr(S_o) - 2 sum(sqrt(eig(S_r S_o))) (`frechet_distance`). The
  eigenvalues of S_r S_o are taken as those of the symmetric sqrt(S_r) S_o sqrt(S_r): two symmetric
  eigendecompositions, whose time does not depend on the data as a general eigensolver's does; tested equal
  to torchmetrics within 1e-3. Per-group FID for at most `MAX_FID_GROUPS` groups; with more, the whole set.
* KID (Binkowski et al. 2018) needs samples of features, not sums. At most `KID_MAX_FEATURES` pairs' features
  are kept (`FeatureSample`; under twice that between cuts): those whose keyed hash (blake2b of `KID_SEED`
  and the key) is smallest, a uniform random subset that does not depend on the order in which shards
  finish; every pair when there are fewer. The kept features, in key order, give KID as torchmetrics'
  `KernelInceptionDistance(subsets, subset_size)` computes it (`kernel_inception_distance`): `subsets`
  times, `subset_size` features drawn without replacement per side (`torch.randperm` with a generator seeded
  with `KID_SEED`), the unbiased MMD with the cubic polynomial kernel; the mean and the population standard
  deviation over the subsets.

Small sets (`warnings` in the result): FID from fewer images than the 2048 features is computed all the same,
as torchmetrics computes it without a word, and comes with a warning: the covariances are singular and the
value is biased upwards, comparable only with FID from as many images. A side with fewer than 2 images has no
FID (null; torchmetrics raises). KID with fewer pairs than `subset_size` uses subsets of every pair, with a
warning (torchmetrics raises); fewer than 2 pairs, no KID.
"""

from __future__ import annotations

import hashlib
import importlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.choices import DatasetMetric
from pipeline.errors import UsageError
from pipeline.metrics.inception import (
    EXTRA_HINT,
    FEATURE_DIM,
    RESIZE_DESCRIPTIONS,
    InceptionFile,
)

MAX_FID_GROUPS = 16  # groups with a FID of their own: 2 x 32 MiB of sums each on the client
KID_MAX_FEATURES = 10_000  # pairs whose features KID keeps: 2 x 80 MiB of float32 features
KID_SEED = 0
ALL = "all"
EXTRACTOR_NAME = "torchmetrics NoTrainInceptionV3 (torch-fidelity's port of the TensorFlow FID Inception v3)"


@dataclass
class ShardFeatures:
    """Inception features of a shard's ok pairs, one row per pair, in the shard's order.

    Attributes:
        keys, groups: the pairs' keys and groups, (n,) each.
        reference, output: (n, 2048) float32 features of the reference and the output image.
    """

    keys: list[str]
    groups: list[str]
    reference: np.ndarray
    output: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, index: np.ndarray) -> ShardFeatures:
        """The pairs at `index` ((k,) int), in that order."""
        return ShardFeatures(
            [self.keys[i] for i in index], [self.groups[i] for i in index],
            self.reference[index], self.output[index],
        )  # fmt: skip

    @classmethod
    def concatenate(cls, parts: list[ShardFeatures]) -> ShardFeatures:
        """The pairs of `parts`, one after another (no pairs, (0, 2048) arrays, for none)."""
        if not parts:
            empty = np.empty((0, FEATURE_DIM), dtype=np.float32)
            return cls([], [], empty, empty.copy())
        return cls(
            [key for part in parts for key in part.keys],
            [group for part in parts for group in part.groups],
            np.concatenate([part.reference for part in parts]),
            np.concatenate([part.output for part in parts]),
        )


@dataclass
class FeatureSums:
    """What FID needs of one image set: the count, the sum of features (d,) and of their outer products
    (d, d), float64; the sums are None until features come."""

    count: int = 0
    total: Tensor | None = None
    outer: Tensor | None = None

    def add(self, features: np.ndarray) -> None:
        """Fold in (n, d) features."""
        values = torch.from_numpy(features).double()
        self.count += len(values)
        self.total = _plus(self.total, values.sum(dim=0))
        self.outer = _plus(self.outer, values.T @ values)

    def __add__(self, other: FeatureSums) -> FeatureSums:
        return FeatureSums(
            self.count + other.count, _plus(self.total, other.total), _plus(self.outer, other.outer)
        )

    def mean_and_covariance(self) -> tuple[Tensor, Tensor]:
        """(d,) mean and (d, d) unbiased covariance (needs `count` >= 2)."""
        assert self.total is not None and self.outer is not None and self.count >= 2
        mean = self.total / self.count
        covariance = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, covariance


def _plus(sum_so_far: Tensor | None, value: Tensor | None) -> Tensor | None:
    if sum_so_far is None or value is None:
        return value if sum_so_far is None else sum_so_far
    return sum_so_far + value


def trace_sqrt_product(first: Tensor, second: Tensor) -> Tensor:
    """tr(sqrt(A B)) of two (d, d) covariances: the sum of the square roots of the eigenvalues of A B, taken
    as those of the symmetric sqrt(A) B sqrt(A) (rounding below zero clipped).

    Example:
        >>> a, b = torch.diag(torch.tensor([4.0, 1.0])), torch.diag(torch.tensor([9.0, 1.0]))
        >>> float(trace_sqrt_product(a, b))
        7.0
    """
    values, vectors = torch.linalg.eigh(first)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    return torch.linalg.eigvalsh(root @ second @ root).clamp(min=0).sqrt().sum()


def frechet_distance(reference: FeatureSums, output: FeatureSums) -> float:
    """FID of two image sets from their sums, in float64.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b = FeatureSums(), FeatureSums()
        >>> a.add(rng.normal(size=(5, 8)).astype(np.float32))
        >>> b.add(rng.normal(size=(5, 8)).astype(np.float32))
        >>> frechet_distance(a, a) < 1e-6 < frechet_distance(a, b)
        True
    """
    mean_r, cov_r = reference.mean_and_covariance()
    mean_o, cov_o = output.mean_and_covariance()
    # Means
    distance = (mean_r - mean_o).square().sum()
    # Covariances
    distance += cov_r.trace() + cov_o.trace() - 2 * trace_sqrt_product(cov_r, cov_o)
    return float(distance)


class FeatureSample:
    """At most `limit` pairs' features (both sides): those with the smallest keyed hash of their key.

    Shards are kept as they come until they hold more than twice `limit` pairs, then cut back to `limit` in
    one pass, so memory stays under twice `limit` pairs and each pair is copied a bounded number of times.
    """

    def __init__(self, limit: int = KID_MAX_FEATURES, seed: int = KID_SEED) -> None:
        self.limit = limit
        self.seed = seed
        self.chunks: list[tuple[np.ndarray, ShardFeatures]] = []  # ((n,) uint64 priorities, features)
        self.count = 0

    def priorities(self, keys: list[str]) -> np.ndarray:
        """Each pair's place in the random order: 8 bytes of blake2b of the seed and its key, (n,) uint64."""
        digests = (hashlib.blake2b(f"{self.seed}:{key}".encode(), digest_size=8).digest() for key in keys)
        return np.array([int.from_bytes(digest, "big") for digest in digests], dtype=np.uint64)

    def add(self, shard: ShardFeatures) -> None:
        if not len(shard):
            return
        self.chunks.append((self.priorities(shard.keys), shard))
        self.count += len(shard)
        if self.count > 2 * self.limit:
            self._cut()

    def _cut(self) -> None:
        """Merge the chunks into one holding the (at most) `limit` pairs of smallest priority."""
        priorities = np.concatenate([chunk_priorities for chunk_priorities, _ in self.chunks])
        merged = ShardFeatures.concatenate([chunk for _, chunk in self.chunks])
        if len(merged) > self.limit:
            keep = np.argpartition(priorities, self.limit)[: self.limit]
            priorities, merged = priorities[keep], merged.take(keep)
        self.chunks = [(priorities, merged)]
        self.count = len(merged)

    def ordered(self) -> ShardFeatures:
        """The kept pairs, at most `limit`, in key order."""
        if not self.chunks:
            return ShardFeatures.concatenate([])
        self._cut()
        kept = self.chunks[0][1]
        return kept.take(np.array(sorted(range(len(kept)), key=kept.keys.__getitem__), dtype=np.int64))


def _torchmetrics_kid() -> Any:
    """torchmetrics' KID module (an optional dependency: the `fid` extra)."""
    try:
        return importlib.import_module("torchmetrics.image.kid")
    except ImportError as exc:
        raise UsageError(f"KID needs torchmetrics ({exc}): {EXTRA_HINT}.") from exc


def kernel_inception_distance(
    reference: Tensor, output: Tensor, subsets: int, subset_size: int, seed: int = KID_SEED
) -> tuple[float, float]:
    """KID as torchmetrics' `KernelInceptionDistance(subsets=..., subset_size=...)` computes it after
    `torch.manual_seed(seed)`: per subset a `torch.randperm` draw of each side, the polynomial-kernel MMD
    (degree 3, gamma 1/d, coef 1); the mean and population std over subsets.

    Args:
        reference, output: (n_r, d) and (n_o, d) features, n_r and n_o >= `subset_size` >= 2.

    Returns:
        (mean, std).
    """
    poly_mmd = _torchmetrics_kid().poly_mmd
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        real = reference[torch.randperm(len(reference), generator=generator)[:subset_size]]
        fake = output[torch.randperm(len(output), generator=generator)[:subset_size]]
        scores.append(poly_mmd(real, fake))
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


class DatasetAccumulator:
    """The client's running state of FID and KID over the shards of a run.

    Args:
        metrics: `DatasetMetric` values ('fid', 'kid').
        groups: every group of the run's pairs (per-group FID when there are at most `max_groups`).
    """

    def __init__(
        self,
        metrics: tuple[str, ...],
        groups: set[str],
        *,
        max_groups: int = MAX_FID_GROUPS,
        kid_limit: int = KID_MAX_FEATURES,
    ) -> None:
        self.metrics = metrics
        self.groups = sorted(groups)
        self.per_group = len(self.groups) <= max_groups
        self.images: Counter[str] = Counter()
        self.sums: dict[str, tuple[FeatureSums, FeatureSums]] = {}
        self.sample = FeatureSample(kid_limit) if DatasetMetric.KID in metrics else None

    def add(self, shard: ShardFeatures | None) -> None:
        """Fold in one shard's features (None: a shard without ok pairs)."""
        if shard is None or not len(shard):
            return
        self.images.update(shard.groups)
        if DatasetMetric.FID in self.metrics:
            for group in sorted(set(shard.groups)):
                rows = [i for i, g in enumerate(shard.groups) if g == group]
                reference, output = self.sums.setdefault(
                    group if self.per_group else ALL, (FeatureSums(), FeatureSums())
                )
                reference.add(shard.reference[rows])
                output.add(shard.output[rows])
        if self.sample is not None:
            self.sample.add(shard)

    def fid(self) -> tuple[dict[str, Any], list[str]]:
        """{'all': FID or None, 'groups': {group: FID or None}} and the warnings about set sizes."""
        warnings: list[str] = []
        whole = _sum_sides(self.sums.values())
        result: dict[str, Any] = {ALL: _fid_or_none(whole, "the whole set", warnings), "groups": {}}
        if not self.per_group:
            warnings.append(
                f"per-group FID left out: {len(self.groups)} groups, more than {MAX_FID_GROUPS} (each group "
                "holds 64 MiB of sums on the client)"
            )
            return result, warnings
        small = min(whole[0].count, whole[1].count) < FEATURE_DIM  # then every group is: said once
        for group in self.groups:
            if len(self.groups) == 1:
                result["groups"][group] = result[ALL]
                continue
            sides = self.sums.get(group, (FeatureSums(), FeatureSums()))
            result["groups"][group] = _fid_or_none(sides, f"group {group}", warnings, warn_small=not small)
        return result, warnings

    def kid(self, subsets: int, subset_size: int) -> tuple[dict[str, Any], list[str]]:
        """{'mean', 'std', 'subsets', 'subset_size' (as used), 'seed', 'sampled'} and warnings."""
        assert self.sample is not None, "KID was not asked for"
        kept = self.sample.ordered()
        reference, output = torch.from_numpy(kept.reference), torch.from_numpy(kept.output)
        count = len(kept)
        result: dict[str, Any] = {
            "mean": None, "std": None, "subsets": subsets, "subset_size": min(subset_size, count),
            "seed": KID_SEED, "sampled": count, "sample_limit": self.sample.limit,
        }  # fmt: skip
        warnings: list[str] = []
        if count < 2:
            warnings.append(f"KID left out: it needs at least 2 scored pairs, {count} found")
            return result, warnings
        if count < subset_size:
            warnings.append(
                f"KID subsets of {count} pairs instead of {subset_size}: only {count} pairs were scored "
                "(torchmetrics raises here; set --kid-subset-size to choose)"
            )
        result["mean"], result["std"] = kernel_inception_distance(
            reference, output, subsets, result["subset_size"]
        )
        return result, warnings


def _sum_sides(sides: Any) -> tuple[FeatureSums, FeatureSums]:
    reference, output = FeatureSums(), FeatureSums()
    for group_reference, group_output in sides:
        reference, output = reference + group_reference, output + group_output
    return reference, output


def _fid_or_none(
    sides: tuple[FeatureSums, FeatureSums], what: str, warnings: list[str], *, warn_small: bool = True
) -> float | None:
    """FID of one set of pairs, or None with a warning when a side has fewer than 2 images; a warning too
    (with `warn_small`) when a side has fewer images than features."""
    count = min(sides[0].count, sides[1].count)
    if count < 2:
        warnings.append(f"FID of {what} left out: it needs at least 2 images per side, {count} found")
        return None
    if warn_small and count < FEATURE_DIM:
        warnings.append(small_set_warning(what, count))
    return frechet_distance(*sides)


def small_set_warning(what: str, count: int) -> str:
    """The warning of a FID from fewer images than Inception features.

    Example:
        >>> small_set_warning("group a", 12)  # doctest: +ELLIPSIS
        'FID of group a from 12 images per side, fewer than the 2048 Inception features: ...'
    """
    return (
        f"FID of {what} from {count} images per side, fewer than the {FEATURE_DIM} Inception features: the "
        "covariances are singular and the value is biased upwards, comparable only with FID from as many "
        "images (computed as torchmetrics computes it, which does not warn)"
    )


def dataset_metrics_manifest(
    accumulator: DatasetAccumulator,
    weights: InceptionFile,
    resize: str,
    *,
    kid_subsets: int,
    kid_subset_size: int,
) -> dict[str, Any]:
    """The manifest's `dataset_metrics`: FID and/or KID, the extractor's convention, the weights' sha256,
    the image counts and the warnings."""
    result: dict[str, Any] = {
        "metrics": list(accumulator.metrics),
        "extractor": {
            "name": EXTRACTOR_NAME,
            "features": FEATURE_DIM,
            "resize": resize,
            "resize_description": RESIZE_DESCRIPTIONS[resize],
            "input": "the aligned pair's stored values as uint8 RGB (other ranges: x / data_range * 255, "
            "truncated; gray replicated), whole images: no convention crop or Y channel",
        },
        "weights": str(weights.path),
        "weights_sha256": weights.sha256,
        "images": {
            "reference": sum(accumulator.images.values()),
            "output": sum(accumulator.images.values()),
            "groups": dict(sorted(accumulator.images.items())),
        },
        "warnings": [],
    }
    if DatasetMetric.FID in accumulator.metrics:
        result["fid"], warnings = accumulator.fid()
        result["warnings"].extend(warnings)
    if DatasetMetric.KID in accumulator.metrics:
        result["kid"], warnings = accumulator.kid(kid_subsets, kid_subset_size)
        result["warnings"].extend(warnings)
    return result
