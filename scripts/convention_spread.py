"""How far each convention's PSNR, SSIM and MS-SSIM are from `default` on the demo data, per image.

    python scripts/convention_spread.py demo-data        # makes demo-data first when it is not there

Prints two Markdown tables: the conventions (the cells of `iqa conventions`), then the spread. For the
spread it scores every pair once under every convention (`pipeline.explain`, crop 0 for all) and gives, for
each convention, the mean and the worst (largest in absolute value, with its key) per-image difference
convention - default of each metric.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pandas as pd
from make_demo_data import build

import pipeline
from pipeline.console import CONVENTION_HEADERS, LPIPS_NOTE, convention_columns
from pipeline.conventions import SPECS
from pipeline.explanation import EXPLAINED_METRICS

BASE = "default"
DIGITS = {"psnr": 3, "ssim": 4, "ms_ssim": 4}


def per_pair_differences(values: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{metric: (pairs x conventions) frame of value - default's value}, from `Explanation.values`."""
    crop0 = values[values["crop"] == 0]
    differences = {}
    for metric in EXPLAINED_METRICS:
        table = crop0.pivot(index="key", columns="convention", values=metric)
        differences[metric] = table.sub(table[BASE], axis=0).drop(columns=BASE)
    return differences


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def conventions_table() -> str:
    """`iqa conventions` as Markdown."""
    rows = [[f"`{name.value}`", *convention_columns(spec)] for name, spec in SPECS.items()]
    return markdown(list(CONVENTION_HEADERS), rows) + f"\n\n{LPIPS_NOTE}"


def spread_table(differences: dict[str, pd.DataFrame]) -> str:
    """Markdown: one row per convention, mean and worst difference per metric."""
    names = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM"}
    header = ["convention"] + [f"{names[m]} {kind}" for m in EXPLAINED_METRICS for kind in ("mean", "worst")]
    rows = []
    for convention in differences[EXPLAINED_METRICS[0]].columns:
        cells = [f"`{convention}`"]
        for metric in EXPLAINED_METRICS:
            column = differences[metric][convention].dropna()
            if column.empty:  # the convention leaves this metric null (skimage-defaults: no MS-SSIM)
                cells += ["-", "-"]
                continue
            worst_key = column.abs().idxmax()
            digits = DIGITS[metric]
            worst = f"{column[worst_key]:+.{digits}f}"
            cells.append(f"{column.mean():+.{digits}f}")
            cells.append(worst if round(column[worst_key], digits) == 0 else f"{worst} ({worst_key})")
        rows.append(cells)
    return markdown(header, rows)


def commit() -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    except OSError:
        return "unknown"
    return result.stdout.strip() or "unknown"


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("root", type=Path, help="demo data folder (reference/ and output/ inside)")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler, as for iqa explain")
    args = parser.parse_args()
    if not (args.root / "reference").is_dir():
        build(args.root)
    explanation = pipeline.explain(
        args.root / "reference", args.root / "output", scheduler=args.scheduler, progress=False
    )
    print(conventions_table() + "\n")
    pairs = len(explanation.pairing.pairs)
    print(f"{pairs} pairs of {args.root} (scripts/make_demo_data.py), commit {commit()}, crop 0;")
    print(f"difference = convention - {BASE}, per image\n")
    print(spread_table(per_pair_differences(explanation.values)))


if __name__ == "__main__":
    main()
