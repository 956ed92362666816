"""manifest.json: what a run scored, how, on what, with which software, and every file that was not a pair."""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from pipeline.choices import METRICS, Device, Status
from pipeline.config import ScoreConfig
from pipeline.conventions import resolve_convention
from pipeline.devices import device_kind
from pipeline.discover import Pairing
from pipeline.errors import RunDirError
from pipeline.locations import Location, StorageOptions, locate
from pipeline.metrics.lpips_weights import BackboneFile
from pipeline.pairing_hints import pairing_hints
from pipeline.run_dirs import MANIFEST_NAME, RunDir

RECORDED_PACKAGES = (
    "iqa-pipeline", "torch", "lpips", "dask", "distributed", "numpy", "pillow", "imagecodecs", "pyarrow",
)  # fmt: skip

log = logging.getLogger(__name__)


def software_versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """{'python': version, package: installed version or 'not installed'}."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(device: str) -> str:
    """'cuda (<GPU name> xN)' when CUDA is used, 'mps (<machine>)' for Apple's MPS, else 'cpu (<machine>)'."""
    kind = device_kind(device)
    if kind == Device.CUDA:
        return f"cuda ({torch.cuda.get_device_name(0)} x{torch.cuda.device_count()})"
    return f"{kind.value} ({platform.machine()})"


def build_manifest(
    *,
    run_id: str,
    created: str,
    ref_dir: RunDir,
    out_dir: RunDir,
    config: ScoreConfig,
    value_hash: str,
    metrics: tuple[str, ...],
    backbone: BackboneFile | None,
    pairing: Pairing,
    status_counts: Mapping[str, int],
    execution: dict[str, Any],
    timings: dict[str, float],
    notices: list[str],
    resumed: dict[str, int] | None = None,
    plugins: dict[str, dict[str, Any]] | None = None,
    dataset_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest.json content.

    `counts['unscored_duplicates']` is the number of reference keys that two or more files claim (on the
    reference or the output side): those references have no row. `hints` suggest an option or a folder when
    fewer than half of the references found an output (`pipeline.pairing_hints`).

    Args:
        value_hash: the config hash of the run's values (`ScoreConfig.value_hash` with its LPIPS backbone).
        backbone: the verified LPIPS backbone file (None when LPIPS is not scored), recorded as
            `lpips_backbone` (path) and `lpips_backbone_sha256` (the hash that is also part of `value_hash`).
        status_counts: {status: number of pairs of this run whose latest row has it}: `{'ok': 9, 'error': 1}`.
        plugins: {column: spec and provenance} of the plugin metrics scored (`measure.plugin_provenance`),
            recorded as `metric_plugins`.
        execution: {'description', 'dashboard', 'shard_pairs'} of the cluster that scored it.
        dataset_metrics: FID/KID of the run (`pipeline.dataset_metrics.dataset_metrics_manifest`), None
            when not asked for.
    """
    convention = resolve_convention(config.convention, crop=config.effective_crop)
    rows = sum(status_counts.values())
    errors = rows - status_counts.get(Status.OK.value, 0)
    return {
        "run_id": run_id,
        "created": created,
        "reference_dir": resolved_url(ref_dir),
        "output_dir": resolved_url(out_dir),
        "metrics": list(metrics),
        "metric_plugins": plugins or {},
        "convention": {
            "name": convention.name.value,
            "crop": convention.crop,
            "description": convention.describe(),
            "spec": convention.spec.to_dict(),
        },
        "config": config.to_dict(),
        "config_hash": value_hash,
        "lpips_backbone": str(backbone.path) if backbone else None,
        "lpips_backbone_sha256": backbone.sha256 if backbone else None,
        "versions": software_versions(),
        "device": device_description(config.device.value),
        "execution": execution["description"],
        "dashboard": execution.get("dashboard"),
        "shard_pairs": execution.get("shard_pairs"),
        "resume": resumed,
        "timings": timings,
        "counts": {
            "pairs": len(pairing.pairs),
            "rows": rows,
            "ok": rows - errors,
            "error": errors,
            "missing": len(pairing.missing),
            "extra": len(pairing.extra),
            "duplicates": len(pairing.duplicates),
            "duplicates_reference": sum(d["side"] == "reference" for d in pairing.duplicates),
            "unscored_duplicates": pairing.unscored_duplicates(),
            "skipped": len(pairing.skipped),
        },
        "missing": pairing.missing,
        "extra": pairing.extra,
        "duplicates": pairing.duplicates,
        "skipped": pairing.skipped,
        "hints": pairing_hints(pairing),
        "notices": notices,
        "dataset_metrics": dataset_metrics,
    }


def resolved_url(folder: RunDir) -> str:
    """How the manifest names an input folder: its real path on a local disk (symlinks resolved), else its
    URL."""
    folder = locate(folder)
    return str(Path(folder.path).resolve()) if folder.local else folder.url


def run_complete(manifest: dict[str, Any]) -> bool:
    """Whether every reference of a run has an ok row: no failed pair, no missing output, and no reference
    whose key two or more files claim (reference or output side).

    A manifest written before `unscored_duplicates` was counted falls back to `duplicates_reference`.

    Example:
        >>> run_complete({"counts": {"error": 0, "missing": 0, "unscored_duplicates": 1}})
        False
    """
    counts = manifest["counts"]
    unscored = counts.get("unscored_duplicates", counts.get("duplicates_reference", 0))
    return counts["error"] == 0 and counts["missing"] == 0 and unscored == 0


def write_manifest(run_dir: RunDir, manifest: dict[str, Any]) -> Location:
    """Write RUN_DIR/manifest.json whole (atomically on a local disk, one upload to a store); its location."""
    target = locate(run_dir).child(MANIFEST_NAME)
    target.write_text(json.dumps(manifest, indent=2, default=str))
    return target


def read_manifest(run_dir: RunDir, storage_options: StorageOptions | None = None) -> dict[str, Any]:
    """RUN_DIR/manifest.json as a dict; the plugin metric columns it records (`metric_plugins`) become known
    to `choices.METRICS` where no plugin installed here defines them, so that a run scored with a plugin
    this machine lacks keeps those columns in summaries, comparisons, tables and reports.

    Raises:
        RunDirError: the file is missing or unreadable, naming it and what to do.
    """
    path = locate(run_dir, storage_options).child(MANIFEST_NAME)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RunDirError(
            f"{run_dir} is not a run directory: {MANIFEST_NAME} is missing. Run `iqa score` first."
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"Cannot read {path}: {exc}. The run directory may be damaged.") from exc
    described = manifest.get("metric_plugins") if isinstance(manifest, dict) else None
    for problem in METRICS.record(described) if isinstance(described, Mapping) else []:
        log.warning("%s: %s.", path, problem)
    return manifest
