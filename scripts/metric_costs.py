"""What each metric costs: every built-in and adapted metric alone on one decoded 512 px RGB pair, 1 thread.

    python scripts/metric_costs.py                      # every metric of every installed library
    python scripts/metric_costs.py --metrics pyiqa:fsim,piq:gmsd --repeats 5

Prints a Markdown table (docs/metrics.md): milliseconds per pair through `pipeline.measure.measure` (decoding
excluded; the plugin's state built before timing), the median of `--repeats` calls after a warm-up (fewer for
a metric slower than `--budget` seconds). The pair is scikit-image's astronaut and a noisy copy (sigma 12).
Nothing is downloaded: LPIPS' AlexNet backbone and pyiqa's LPIPS layers are seeded random weights in a
temporary TORCH_HOME (speed does not depend on the values); a metric needing other weights is listed as such.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import skimage.data
import torch
import torch.hub
from bench.dataset import seeded_alexnet
from bench_conventions import noisy_pair

from pipeline.choices import BUILTIN_METRICS, adapter_entry_points, metric_adapter, metric_column
from pipeline.conventions import resolve_convention
from pipeline.errors import IQAError
from pipeline.measure import Cache, measure, metric_plugin, prepare_plugins
from pipeline.metrics.lpips_weights import build_lpips_network


def refuse_download(url: str, path: str, *args: object, **kwargs: object) -> None:
    raise OSError("this script downloads nothing")


def seed_pyiqa_lpips(torch_home: Path) -> None:
    """pyiqa's LPIPS (alex) linear layers, seeded, where pyiqa looks under `torch_home`."""
    import pyiqa  # after TORCH_HOME is set: pyiqa fixes its weights folder when imported

    path = torch_home / "hub" / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    network = pyiqa.create_metric("lpips", pretrained=False, device="cpu").net
    torch.save({key: value for key, value in network.state_dict().items() if key.startswith("lin")}, path)


def every_metric() -> list[str]:
    """The built-ins, then each installed library's adapted metrics (`LIBRARY:NAME`)."""
    names = list(BUILTIN_METRICS)
    for prefix in adapter_entry_points():
        try:
            names += [f"{prefix}:{name}" for name in metric_adapter(prefix).names()]
        except IQAError as exc:
            print(f"<!-- {prefix}: {exc} -->")
    return names


def milliseconds(column: str, pair: tuple[torch.Tensor, torch.Tensor], cache: Cache, repeats: int,
                 budget: float) -> float:  # fmt: skip
    """Median milliseconds of `measure` of one metric on the pair, after a warm-up."""
    convention = resolve_convention("default")
    measure(*pair, 255.0, (column,), convention, cache)
    times: list[float] = []
    while len(times) < repeats and sum(times) < budget:
        start = time.perf_counter()
        measure(*pair, 255.0, (column,), convention, cache)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def cost_row(
    name: str, pair: tuple[torch.Tensor, torch.Tensor], lpips_backbone: Path, args: argparse.Namespace
) -> str:
    """One Markdown row: metric, column, direction, unit, ms per pair (or why it was not measured)."""
    column = metric_column(name)
    try:
        spec = metric_plugin(column).spec
        cache = Cache(
            build_network=lambda device: build_lpips_network("alex", lpips_backbone, device=device),
            setups=prepare_plugins((column,)),
        )
        cost = f"{milliseconds(column, pair, cache, args.repeats, args.budget):.3g}"
    except IQAError as exc:
        needed = re.search(r"weights file ([^\s,]+)", str(exc))
        return f"| `{name}` | `{column}` | | | not measured: {f'needs {needed[1]}' if needed else exc} |"
    direction = "higher" if spec.higher_is_better else "lower"
    return f"| `{name}` | `{column}` | {direction} | {spec.unit} | {cost} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metrics", help="comma-separated metrics (default: every built-in and adapted one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=10.0, help="at most this many seconds of timed calls")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.hub.download_url_to_file = refuse_download
    with tempfile.TemporaryDirectory(prefix="iqa-costs-") as home:
        os.environ["TORCH_HOME"] = home  # before pyiqa is imported: it fixes its folder then
        backbone = seeded_alexnet(Path(home))
        seed_pyiqa_lpips(Path(home))
        pair = noisy_pair(skimage.data.astronaut())
        names = args.metrics.split(",") if args.metrics else every_metric()
        print(f"torch {torch.__version__}, 1 thread, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        print("| metric | column | better | unit | ms per 512 px RGB pair |\n|---|---|---|---|---|")
        for name in names:
            print(cost_row(name, pair, backbone, args), flush=True)


if __name__ == "__main__":
    main()
