"""`iqa table` and `pipeline.table`: paper tables from run directories (pipeline/paper_table.py and its
formats). Runs are written directly (a manifest and one Parquet part): each test sets the exact values."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import free_port, one_line_error, s3_environment, start_s3_server
from typer.testing import CliRunner

import pipeline
from pipeline.choices import METRICS
from pipeline.cli import app
from pipeline.errors import NotComparableError, UsageError
from pipeline.paper_table import collect_table
from pipeline.paper_table_formats import column_ranks, format_latex, format_markdown, render_table
from pipeline.results import ResultRow, rows_to_table
from pipeline.summary import summarize_groups

runner = CliRunner()


def write_run(
    path: Path,
    values: dict[str, dict[str, list[float]]],
    *,
    convention: str = "default",
    crop: int = 0,
    **config,
) -> Path:
    """A run directory holding `values` ({group: {metric: one value per pair}}), scored under `convention`."""
    rows = []
    for group, metrics in values.items():
        for index in range(len(next(iter(metrics.values())))):
            row = ResultRow(key=f"{group}/{index}", group=group, ref_path="r", out_path="o", run_id="test")
            for metric, series in metrics.items():
                row.set_metric(metric, series[index])
            rows.append(row)
    (path / "scores").mkdir(parents=True)
    pq.write_table(rows_to_table(rows), path / "scores" / "part-00000.parquet")
    manifest = {
        "convention": {
            "name": convention,
            "crop": crop,
            "description": f"{convention}: test, crop {crop} px",
        },
        "config": config,
    }
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    """Runs a, b, c over groups x and y: PSNR best b then c; LPIPS (lower is better) best a then c."""
    psnr = {"a": 30.0, "b": 32.0, "c": 31.0}
    lpips = {"a": 0.10, "b": 0.30, "c": 0.20}

    def values(name: str, shift: float) -> dict[str, list[float]]:
        return {"psnr": [psnr[name] + shift - 0.5, psnr[name] + shift + 0.5], "lpips": [lpips[name]] * 2}

    return [write_run(tmp_path / name, {"x": values(name, 0.0), "y": values(name, 1.0)}) for name in psnr]


def table_cells(markdown: str) -> list[list[str]]:
    """The cells of a Markdown pipe table's rows (header and body, not the delimiter row)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[:1] + lines[2:]]


# LaTeX, checked syntactically


def latex_structure(latex: str) -> tuple[int, list[int], list[tuple[int, int]]]:
    """(columns of the tabular spec, columns of each row, cmidrule ranges); asserts balanced braces and
    environments after dropping comments and escaped characters."""
    text = "\n".join(re.sub(r"(?<!\\)%.*", "", line) for line in latex.splitlines())
    plain = re.sub(r"\\[{}&%$#_]", "", text)
    depth = 0
    for char in plain:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, f"a '}}' closes nothing in\n{latex}"
    assert depth == 0, f"unclosed braces in\n{latex}"
    assert re.findall(r"\\begin\{(\w+)\}", plain) == re.findall(r"\\end\{(\w+)\}", plain)[::-1]
    spec = re.search(r"\\begin\{tabular\}\{([^}]*)\}", plain).group(1)
    body = plain.split(r"\begin{tabular}")[1].split(r"\end{tabular}")[0]
    rows = [row for row in re.split(r"\\\\", body.split("\n", 1)[1]) if "&" in row]
    widths = [
        sum(int(n) for n in re.findall(r"\\multicolumn\{(\d+)\}", row))
        + len([cell for cell in row.split("&") if r"\multicolumn" not in cell])
        for row in rows
    ]
    rules = [(int(a), int(b)) for a, b in re.findall(r"\\cmidrule\(lr\)\{(\d+)-(\d+)\}", plain)]
    return len(re.findall(r"[lcr]", spec)), widths, rules


def test_a_latex_table_by_group_is_syntactically_sound(three_runs):
    paper = collect_table(three_runs, by="group", labels=["a_1 & {x}", "50% b", "c#"])
    latex = format_latex(paper, ci=True)
    columns, widths, rules = latex_structure(latex)
    assert columns == 1 + 4 and widths == [columns] * 5  # group row, metric row, three runs
    assert rules == [(2, 3), (4, 5)]
    assert r"a\_1 \& \{x\}" in latex and r"50\% b" in latex and r"c\#" in latex
    assert r"\caption{" in latex and "Convention default: test, crop 0 px" in latex and r"95\% CI" in latex
    assert r"\multicolumn{2}{c}{x}" in latex and r"PSNR$\uparrow$" in latex and r"LPIPS$\downarrow$" in latex
    assert r"\textbf{32.00 $\pm$ " in latex


def test_the_latex_check_catches_an_unescaped_percent():
    with pytest.raises(AssertionError, match="unclosed"):
        latex_structure("\\begin{table}\\caption{95% CI}\n\\end{table}")


# Marks


def test_best_bold_and_second_underlined_follow_each_metrics_direction(three_runs):
    cells = table_cells(render_table(collect_table(three_runs), "md"))
    assert cells[0] == ["Run", "PSNR↑", "LPIPS↓"]
    assert cells[1:] == [
        ["a", "30.50", "**0.1000**"],
        ["b", "**32.50**", "0.3000"],
        ["c", "<u>31.50</u>", "<u>0.2000</u>"],
    ]
    latex = render_table(collect_table(three_runs), "latex")
    assert r"b & \textbf{32.50} & 0.3000 \\" in latex
    assert r"c & \underline{31.50} & \underline{0.2000} \\" in latex
    html = render_table(collect_table(three_runs), "html")
    assert '<th scope="row">a</th><td>30.50</td><td><b>0.1000</b></td>' in html
    assert "<td><u>31.50</u></td><td><u>0.2000</u></td>" in html
    plain = list(csv.reader(io.StringIO(render_table(collect_table(three_runs), "csv"))))
    assert plain == [["run", "psnr", "lpips"], ["a", "30.50", "0.1000"], ["b", "32.50", "0.3000"],
                     ["c", "31.50", "0.2000"]]  # fmt: skip


def test_values_equal_as_shown_share_their_mark(tmp_path):
    runs = [
        write_run(tmp_path / name, {"g": {"psnr": [value], "ssim": [0.9]}})
        for name, value in (("a", 30.001), ("b", 30.004), ("c", 29.0), ("d", 28.0))
    ]
    cells = table_cells(format_markdown(collect_table(runs)))
    assert [row[1] for row in cells[1:]] == ["**30.00**", "**30.00**", "<u>29.00</u>", "28.00"]
    assert [row[2] for row in cells[1:]] == ["0.9000"] * 4  # one value: nothing singled out
    assert column_ranks([0.3, 0.2], "lpips") == [None, 1]  # of two values only the best is marked


def test_one_run_gives_one_row_without_marks(three_runs):
    frame = pipeline.table(three_runs[:1], by="group")
    assert list(frame.index) == ["a"] and frame.shape == (1, 4)
    markdown = format_markdown(collect_table(three_runs[:1], by="group"))
    assert "**" not in markdown and "<u>" not in markdown
    assert table_cells(markdown)[1] == ["a", "30.00", "0.1000", "31.00", "0.1000"]


def test_a_metric_or_group_missing_in_one_run_shows_a_dash(tmp_path):
    full = write_run(tmp_path / "full", {"x": {"psnr": [30.0], "lpips": [0.2]}, "y": {"psnr": [31.0]}})
    part = write_run(tmp_path / "part", {"x": {"psnr": [29.0]}})
    frame = pipeline.table([full, part], by="group")
    assert list(frame.columns) == [("x", "psnr"), ("x", "lpips"), ("y", "psnr"), ("y", "lpips")]
    assert np.isnan(frame.loc["part", ("x", "lpips")]) and np.isnan(frame.loc["part", ("y", "psnr")])
    paper = collect_table([full, part], by="group")
    assert table_cells(format_markdown(paper))[2] == ["part", "29.00", "-", "-", "-"]
    assert table_cells(format_markdown(paper))[1] == ["full", "**30.00**", "0.2000", "31.00", "-"]
    assert r"part & 29.00 & - & - & - \\" in format_latex(paper)
    assert "<td>29.00</td><td>-</td>" in render_table(paper, "html")
    assert render_table(paper, "csv").splitlines()[2] == "part,29.00,,,"


def test_columns_found_by_name_only_follow_the_listed_metrics(tmp_path, monkeypatch):
    """A column that `METRICS` finds by name but does not list (one the run recorded for a plugin this machine
    lacks; an adapted metric's) is a default column too, after the listed ones."""
    monkeypatch.setattr(METRICS, "_recorded", {})
    run = write_run(tmp_path / "run", {"x": {"psnr": [30.0, 32.0]}})
    part = pq.read_table(run / "scores" / "part-00000.parquet")
    pq.write_table(
        part.append_column("ext_sharpness", pa.array([0.25, 0.75])), run / "scores" / "part-00000.parquet"
    )
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["metric_plugins"] = {"ext_sharpness": {"higher_is_better": True, "unit": "", "tolerance": 0.01}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    frame = pipeline.table([run])
    assert list(frame.columns) == ["psnr", "ext_sharpness"] and frame.loc["run", "ext_sharpness"] == 0.5
    assert "ext_sharpness" not in list(METRICS) and "ext_sharpness" in METRICS


# The DataFrame


def test_the_dataframe_holds_the_means_and_the_ci_half_widths_of_the_summary(three_runs):
    frame = pipeline.table(three_runs, by="group", metrics="psnr", labels=["A", "B", "C"])
    assert frame.columns.names == ["group", "metric"] and frame.index.name == "run"
    assert list(frame.index) == ["A", "B", "C"] and list(frame.columns) == [("x", "psnr"), ("y", "psnr")]
    assert frame.loc["B", ("y", "psnr")] == pytest.approx(33.0)
    summary = summarize_groups(pipeline.load_results(three_runs[1]), ["psnr"])[1]
    widths = collect_table(three_runs, by="group", metrics="psnr").half_widths
    assert widths.iloc[1, 1] == pytest.approx((summary.ci_high - summary.ci_low) / 2)
    overall_paper = collect_table(three_runs, metrics="psnr")
    half_width = overall_paper.half_widths.loc["b", "psnr"]
    assert f"**32.50 ± {half_width:.2f}**" in format_markdown(overall_paper, ci=True)
    overall = pipeline.table(three_runs)
    assert list(overall.columns) == ["psnr", "lpips"] and overall.loc["a", "psnr"] == pytest.approx(30.5)
    assert list(pipeline.table(three_runs, metrics="lpips,psnr").columns) == ["lpips", "psnr"]
    assert pipeline.table is pipeline.api.table


def test_the_markdown_table_renders_as_a_pipe_table(three_runs):
    markdown_it = pytest.importorskip("markdown_it")
    paper = collect_table(three_runs, by="group", labels=["a|b", "*b*", "c_d"])
    text = format_markdown(paper, ci=True)
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    assert html.count("<table>") == 1 and len(re.findall(r"<th[ >]", html)) == 5
    assert len(re.findall(r"<td[ >]", html)) == 3 * 5
    assert ">a|b</td>" in html and ">*b*</td>" in html and ">c_d</td>" in html
    assert "<strong>" in html and "<u>" in html
    caption = text.splitlines()[-1]
    assert caption.startswith("Table: ") and "Convention default: test, crop 0 px" in caption


# Refusals and usage errors


def test_runs_under_different_conventions_are_refused_naming_the_difference(tmp_path):
    default = write_run(tmp_path / "bicubic", {"g": {"psnr": [30.0]}})
    paper = write_run(tmp_path / "ours", {"g": {"psnr": [31.0]}}, convention="sr-paper", crop=4)
    result = runner.invoke(app, ["table", str(default), str(paper)])
    one_line_error(result, 2, "bicubic vs ours: convention default vs sr-paper", "crop 0 vs 4")
    with pytest.raises(NotComparableError):
        pipeline.table([default, paper])


def test_a_metric_setting_is_a_difference_only_for_its_metric(tmp_path):
    a = write_run(tmp_path / "a", {"g": {"psnr": [30.0], "ms_ssim": [0.9]}}, ms_ssim_scales=5)
    b = write_run(tmp_path / "b", {"g": {"psnr": [31.0], "ms_ssim": [0.8]}}, ms_ssim_scales=3)
    one_line_error(runner.invoke(app, ["table", str(a), str(b)]), 2, "a vs b: ms_ssim_scales 5 vs 3")
    assert list(pipeline.table([a, b], metrics="psnr").columns) == ["psnr"]


def test_a_setting_of_a_metric_the_first_run_lacks_is_still_compared(tmp_path):
    a = write_run(tmp_path / "a", {"g": {"psnr": [30.0]}})
    b = write_run(tmp_path / "b", {"g": {"psnr": [31.0], "lpips": [0.2]}}, lpips_net="alex")
    c = write_run(tmp_path / "c", {"g": {"psnr": [32.0], "lpips": [0.1]}}, lpips_net="vgg")
    with pytest.raises(
        NotComparableError, match=r"^Runs are not comparable: b vs c: lpips_net alex vs vgg\. "
    ):
        pipeline.table([a, b, c])
    with pytest.raises(UsageError, match="by='metric': choose 'group' or None"):
        pipeline.table([a, b], by="metric")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--label", "only-one"], "1 --label for 2 runs"),
        (["--metrics", "psnr,sharpness"], "unknown metric 'sharpness'"),
        (["--metrics", "mse"], "no run holds 'mse'"),
        (["--format", "docx"], None),
    ],
)
def test_usage_errors_exit_2(three_runs, extra, needle):
    result = runner.invoke(app, ["table", str(three_runs[0]), str(three_runs[1]), *extra])
    if needle is None:
        assert result.exit_code == 2 and "docx" in result.output
    else:
        one_line_error(result, 2, needle)


def test_two_runs_of_one_name_need_labels(tmp_path):
    first = write_run(tmp_path / "one" / "run", {"g": {"psnr": [30.0]}})
    second = write_run(tmp_path / "two" / "run", {"g": {"psnr": [31.0]}})
    with pytest.raises(UsageError, match="Two rows would be named 'run'"):
        pipeline.table([first, second])
    assert list(pipeline.table([first, second], labels=["A", "B"]).index) == ["A", "B"]
    one_line_error(runner.invoke(app, ["table", str(tmp_path / "one")]), 2, "is not a run directory")


def test_the_cli_prints_each_format_with_labels(three_runs):
    args = ["table", *map(str, three_runs), "--by", "group", "--label", "A", "--label", "B", "--label", "C"]
    markdown = runner.invoke(app, [*args, "--ci"])
    assert markdown.exit_code == 0, markdown.output
    assert table_cells(markdown.output)[2][0] == "B" and " ± " in markdown.output
    latex = runner.invoke(app, [*args, "--format", "latex"])
    assert latex.exit_code == 0 and latex.output.startswith("% needs \\usepackage{booktabs}")
    html = runner.invoke(app, [*args, "-f", "html"])
    assert html.output.count("<tr>") == 5 and '<th colspan="2">x</th>' in html.output


# Runs in object storage


@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = free_port()
    server = start_s3_server(port)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


def test_runs_in_object_storage_with_a_storage_option(three_runs, s3_endpoint, monkeypatch):
    s3fs = pytest.importorskip("s3fs")
    for name, value in s3_environment(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only --storage-option names the server
    s3fs.S3FileSystem.clear_instance_cache()
    store = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    bucket = f"iqa-{uuid.uuid4().hex[:12]}"
    store.mkdir(bucket)
    for run in three_runs[:2]:
        store.put(f"{run}/", f"{bucket}/runs/{run.name}/", recursive=True)
    urls = [f"s3://{bucket}/runs/a", f"s3://{bucket}/runs/b"]
    result = runner.invoke(app, ["table", *urls, "--storage-option", f"endpoint_url={s3_endpoint}"])
    assert result.exit_code == 0, result.output
    assert [row[0] for row in table_cells(result.output)[1:]] == ["a", "b"]
    local = pipeline.table(three_runs[:2])
    remote = pipeline.table(urls, storage_options={"endpoint_url": s3_endpoint})
    pd.testing.assert_frame_equal(remote, local)
    s3fs.S3FileSystem.clear_instance_cache()
