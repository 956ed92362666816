"""Which metrics run on a batch of aligned pairs, under a convention, and why a value is left null.

Example:
    >>> import torch
    >>> from pipeline.conventions import resolve_convention
    >>> ref = torch.full((1, 1, 8, 8), 10, dtype=torch.uint8)
    >>> convention = resolve_convention("default")
    >>> values, warnings = measure(ref, ref + 1, 255.0, ("psnr", "ssim"), convention, Cache())
    >>> round(values["psnr"][0], 2), values["ssim"], warnings
    (48.13, [None], ['image is 8x8, smaller than the 11 px SSIM window: ssim and ms_ssim left null'])
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from pipeline.choices import BUILTIN_METRICS, adapted_plugin, installed_plugins
from pipeline.conventions import ResolvedConvention, crop_border, prepare_pixels
from pipeline.errors import ImageError
from pipeline.metric_plugins import Batch, MetricPlugin
from pipeline.metrics.lpips_network import LpipsNetwork
from pipeline.metrics.perceptual import lpips_of_stored_values
from pipeline.metrics.psnr import mse, psnr_from_mse
from pipeline.metrics.ssim import WINDOW_SIZE, gaussian_window, ms_ssim_min_side, ssim, ssim_and_ms_ssim
from pipeline.metrics.structural import StructuralSpec, structural_similarity
from pipeline.metrics.structural import min_side as structural_min_side

FAST_STRUCTURAL = StructuralSpec()  # `pipeline.metrics.ssim`'s definition, computed by its fast path

Values = dict[str, list[float | None]]


class Resources(Protocol):
    """What the metrics need built once per process: Gaussian windows, the LPIPS network and the states of
    plugin metrics."""

    def window(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor: ...

    def lpips_network(self, device: torch.device) -> LpipsNetwork: ...

    def plugin_state(self, plugin: MetricPlugin, device: torch.device) -> Any: ...


@dataclass
class Cache:
    """`Resources` built on first use and kept; `build_network(device)` makes the LPIPS network, and each
    plugin's state is `plugin.make_state(device, setup, shipped)`: `setup` is `setups[plugin.name]` (what
    its `prepare` made on the client), `shipped` is `shipped.get(plugin.name)` (what its `ship` sent this
    worker)."""

    build_network: Callable[[torch.device], LpipsNetwork] | None = None
    setups: dict[str, Any] = field(default_factory=dict)
    shipped: dict[str, Any] = field(default_factory=dict)
    windows: dict[tuple, torch.Tensor] = field(default_factory=dict)
    networks: dict[str, LpipsNetwork] = field(default_factory=dict)
    states: dict[tuple[str, str], Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def plugin_state(self, plugin: MetricPlugin, device: torch.device) -> Any:
        if plugin.build_state is None:
            return None
        with self.lock:
            key = (plugin.name, str(device))
            if key not in self.states:
                setup, shipped = self.setups.get(plugin.name), self.shipped.get(plugin.name)
                self.states[key] = plugin.make_state(device, setup, shipped)
            return self.states[key]

    def window(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, str(device))
        if key not in self.windows:
            self.windows[key] = gaussian_window(dtype=dtype, device=device)
        return self.windows[key]

    def lpips_network(self, device: torch.device) -> LpipsNetwork:
        with self.lock:
            if str(device) not in self.networks:
                if self.build_network is None:
                    raise RuntimeError("LPIPS was asked for, but no network builder was given")
                self.networks[str(device)] = self.build_network(device)
            return self.networks[str(device)]


def _floats(tensor: torch.Tensor) -> list[float | None]:
    return [float(v) for v in tensor.cpu().double().tolist()]


@dataclass(frozen=True)
class BuiltinState:
    """What the built-in metrics get as their state: the shared resources and the MS-SSIM scales."""

    resources: Resources
    ms_ssim_scales: int = 5


def measure(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    metrics: tuple[str, ...],
    convention: ResolvedConvention,
    resources: Resources,
    *,
    ms_ssim_scales: int = 5,
) -> tuple[Values, list[str]]:
    """Metric values for a batch of aligned pairs of one shape, under a convention.

    Args:
        ref, out: (N, C, H, W) or (N, C, D, H, W) stored values (integers or floats) in [0, data_range].
        data_range: the peak value of the stored values.
        metrics: columns of `pipeline.choices.METRICS` (built-ins and installed plugins).
        convention: what the pixel metrics see (channels, crop, precision).
        resources: the Gaussian window, the LPIPS network and the plugins' states.
        ms_ssim_scales: MS-SSIM scales.

    Returns:
        ({metric: N values, None where left null}, warnings that explain every null; one list for the batch).

    Raises:
        ImageError: the images are too small for the convention's crop.
    """
    crop = convention.crop
    if crop and min(ref.shape[-2:]) <= 2 * crop:
        raise ImageError(
            f"the reference is {ref.shape[-1]}x{ref.shape[-2]}, too small to crop {crop} px from each "
            "border. Use a smaller --crop-border or --scale."
        )
    batch = Batch(ref, out, data_range, convention, metrics=tuple(metrics))
    builtin = BuiltinState(resources, ms_ssim_scales)
    values: Values = {}
    # LPIPS first: its activations are the larger allocations, whose freed memory the pixel metrics reuse
    for name in sorted(metrics, key=lambda name: name != "lpips"):
        plugin = metric_plugin(name)
        state = builtin if name in BUILTIN_PLUGINS else resources.plugin_state(plugin, ref.device)
        values[name] = plugin.compute(batch, state)
    return values, batch.warnings


def prepare_plugins(metrics: tuple[str, ...]) -> dict[str, Any]:
    """{column: setup} of the plugin metrics among `metrics`: what each plugin's `prepare` resolved and
    verified on the client (e.g. weights), to ship to the workers; built-ins need none.

    Raises:
        WeightsError: a plugin's weights are missing or wrong (its own one-line message).
    """
    setups = {}
    for name in metrics:
        plugin = metric_plugin(name)
        if name not in BUILTIN_PLUGINS and plugin.prepare is not None:
            setups[name] = plugin.prepare()
    return setups


def ship_plugins(setups: dict[str, Any]) -> dict[str, Any]:
    """{column: what the plugin sends every Dask worker once} of the plugins whose setups (`prepare_plugins`)
    have something to ship (`MetricPlugin.ship`, e.g. the bytes of their weights files).

    Raises:
        WeightsError: a file a setup names changed since `prepare` verified it (the plugin's own message).
    """
    shipments = {}
    for name, setup in setups.items():
        plugin = metric_plugin(name)
        shipment = plugin.ship(setup) if plugin.ship is not None else None
        if shipment is not None:
            shipments[name] = shipment
    return shipments


def plugin_provenance(metrics: tuple[str, ...], setups: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{column: its spec and provenance} of the plugin metrics among `metrics`, for the manifest, so that
    readers without the plugin installed still know each column's direction, unit, tolerance and digits
    (`choices.MetricTable.record`)."""
    described = {}
    for name in metrics:
        if name in BUILTIN_PLUGINS:
            continue
        plugin = metric_plugin(name)
        spec = plugin.spec
        described[name] = {
            "higher_is_better": spec.higher_is_better, "unit": spec.unit, "description": spec.description,
            "tolerance": spec.tolerance, "digits": spec.digits, **plugin.provenance(setups.get(name)),
        }  # fmt: skip
    return described


def metric_plugin(name: str) -> MetricPlugin:
    """The plugin of a metric column: a built-in, one an installed package registers, or an adapted metric of
    another library (`pyiqa_fsim`: `choices.adapted_plugin`, made from the column alone).

    Raises:
        KeyError: no such metric is installed.
        ConfigError: an adapted metric whose library is missing or lacks it.
    """
    if name in BUILTIN_PLUGINS:
        return BUILTIN_PLUGINS[name]
    plugins = installed_plugins()
    return plugins[name] if name in plugins else adapted_plugin(name)


def _lpips_of(batch: Batch, state: BuiltinState) -> list[float | None]:
    ref, out = batch.ref, batch.out
    if ref.dim() == 5:
        batch.warnings.append("lpips left null: LPIPS is defined on 2-D images only, not on volumes")
        return [None] * batch.size
    crop = batch.convention.crop
    distance = lpips_of_stored_values(
        crop_border(ref, crop),
        crop_border(out, crop),
        data_range=batch.data_range,
        network=state.resources.lpips_network(ref.device),
    )
    return _floats(distance)


def _pixels(batch: Batch, for_psnr: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ref, out) as the convention's pixel metrics see them, computed once per batch."""
    convention, data_range = batch.convention, batch.data_range

    def prepare() -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(
            prepare_pixels(x, convention, data_range=data_range, for_psnr=for_psnr)
            for x in (batch.ref, batch.out)
        )

    return batch.once(("pixels", for_psnr and convention.spec.psnr_channels is not None), prepare)


def _error(batch: Batch) -> torch.Tensor:
    """The per-pair MSE on the channels PSNR and MSE see under the convention, computed once per batch."""
    return batch.once("mse", lambda: mse(*_pixels(batch, for_psnr=True)))


def _mse_of(batch: Batch, state: BuiltinState) -> list[float | None]:
    return _floats(_error(batch))


def _psnr_of(batch: Batch, state: BuiltinState) -> list[float | None]:
    epsilon = batch.convention.spec.psnr_epsilon * batch.data_range**2  # given for values scaled to [0, 1]
    return _floats(psnr_from_mse(_error(batch) + epsilon, data_range=batch.data_range))


def _ssim_of(batch: Batch, state: BuiltinState) -> list[float | None]:
    return _structural_values(batch, state)["ssim"]


def _ms_ssim_of(batch: Batch, state: BuiltinState) -> list[float | None]:
    convention = batch.convention
    if convention.spec.no_ms_ssim:
        batch.warnings.append(
            f"ms_ssim left null: {convention.spec.no_ms_ssim} (convention {convention.name.value})"
        )
        return [None] * batch.size
    return _structural_values(batch, state)["ms_ssim"]


def _structural_values(batch: Batch, state: BuiltinState) -> Values:
    """SSIM and MS-SSIM of the batch (the ones its metrics ask for, sharing the full-resolution filtering),
    computed once per batch."""

    def compute() -> Values:
        spec = batch.convention.spec
        wanted = tuple(
            name
            for name in ("ssim", "ms_ssim")
            if name in batch.metrics and not (name == "ms_ssim" and spec.no_ms_ssim)
        )
        ref, out = _pixels(batch)
        scales, data_range = state.ms_ssim_scales, batch.data_range
        if spec.structural == FAST_STRUCTURAL:
            window = state.resources.window(ref.dtype, ref.device)
            return _structural(ref, out, data_range, wanted, window, scales, batch.warnings)
        return _as_specified(ref, out, data_range, wanted, spec.structural, scales, batch.warnings)

    return batch.once("structural", compute)


BUILTIN_PLUGINS: dict[str, MetricPlugin] = {
    name: MetricPlugin(BUILTIN_METRICS[name], batch_function=function)
    for name, function in (
        ("psnr", _psnr_of), ("ssim", _ssim_of), ("ms_ssim", _ms_ssim_of), ("lpips", _lpips_of),
        ("mse", _mse_of),
    )
}  # fmt: skip


def _structural(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    metrics: tuple[str, ...],
    window: torch.Tensor,
    scales: int,
    warnings: list[str],
) -> Values:
    """SSIM and MS-SSIM (sharing the full-resolution filtering when both are wanted), or nulls and why."""
    count, short_side = ref.shape[0], min(ref.shape[2:])
    wanted = [name for name in ("ssim", "ms_ssim") if name in metrics]
    values: Values = {name: [None] * count for name in wanted}
    if short_side < WINDOW_SIZE:
        size = "x".join(str(side) for side in reversed(ref.shape[2:]))
        warnings.append(
            f"image is {size}, smaller than the {WINDOW_SIZE} px SSIM window: ssim and ms_ssim left null"
        )
        return values
    min_side = ms_ssim_min_side(scales)
    if "ms_ssim" in wanted and short_side >= min_side:
        ssim_value, ms_value = ssim_and_ms_ssim(ref, out, data_range=data_range, scales=scales, window=window)
        values["ms_ssim"] = _floats(ms_value)
        if "ssim" in wanted:
            values["ssim"] = _floats(ssim_value)
        return values
    if "ms_ssim" in wanted:
        warnings.append(
            f"ms_ssim left null: {scales}-scale MS-SSIM needs >= {min_side} px on the short side, got "
            f"{short_side} (set ms_ssim_scales lower to score small images)"
        )
    if "ssim" in wanted:
        values["ssim"] = _floats(ssim(ref, out, data_range=data_range, window=window))
    return values


def _as_specified(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    metrics: tuple[str, ...],
    spec: StructuralSpec,
    scales: int,
    warnings: list[str],
) -> Values:
    """SSIM and MS-SSIM under a tool's `StructuralSpec` (`pipeline.metrics.structural`), or nulls and why."""
    count, short_side = ref.shape[0], min(ref.shape[2:])
    wanted = [name for name in ("ssim", "ms_ssim") if name in metrics]
    values: Values = {name: [None] * count for name in wanted}
    if ref.dim() != 4:
        warnings.append("ssim and ms_ssim left null: this convention's SSIM is defined on 2-D images only")
        return values
    if short_side < structural_min_side(spec):
        warnings.append(
            f"image side {short_side} px is smaller than this convention's SSIM needs "
            f"({structural_min_side(spec)} px): ssim and ms_ssim left null"
        )
        return values
    needed = structural_min_side(spec, scales)
    with_ms = "ms_ssim" in wanted and short_side >= needed
    if "ms_ssim" in wanted and not with_ms:
        warnings.append(
            f"ms_ssim left null: {scales}-scale MS-SSIM needs >= {needed} px on the short side under this "
            f"convention, got {short_side} (set ms_ssim_scales lower)"
        )
    ssim_value, ms_value = structural_similarity(
        ref, out, spec, data_range=data_range, with_ms_ssim=with_ms, scales=scales
    )
    if "ssim" in wanted:
        values["ssim"] = _floats(ssim_value)
    if ms_value is not None:
        values["ms_ssim"] = _floats(ms_value)
    return values


__all__ = ["BUILTIN_PLUGINS", "BuiltinState", "Cache", "Resources", "measure", "metric_plugin"]
