"""Every Parquet reader sees each key once with its latest values, after any run including `--resume`
(`results.retire_superseded_rows`), and a run that stopped half-way through retiring still resumes."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.dataframe
import duckdb
import pandas as pd
import polars
import pytest
from conftest import degrade, make_dataset, real_image, save_image

from pipeline.config import ScoreConfig
from pipeline.locations import Location
from pipeline.results import load_results, part_paths, retire_superseded_rows
from pipeline.run_dirs import SUPERSEDED_DIR
from pipeline.scoring import score_folders

CHANGED = ("g0/0000", "g1/0004", "g2/0008")


def score(ref, out, run_dir, *, resume: bool = False, metrics=("psnr", "mse")):
    config = ScoreConfig(metrics=metrics, scheduler="sync", shard_pairs=4, report=False)
    return score_folders(ref, out, run_dir, config, resume=resume, progress=False)


def change_outputs(out, keys=CHANGED) -> None:
    """Write other outputs for `keys` (blurred instead of noisy), so `--resume` rescores them."""
    for index, key in enumerate(keys):
        image = real_image("astronaut.png")[index * 10 : index * 10 + 96, :96]
        save_image(out / f"{key}.png", degrade(image, "blur"))


def every_reader(run_dir) -> dict[str, pd.DataFrame]:
    """key -> psnr as pandas, DuckDB, polars and Dask read RUN_DIR/scores, each sorted by key."""
    scores = run_dir / "scores"
    frames = {
        "pandas": pd.read_parquet(scores, columns=["key", "psnr"]),
        "duckdb": duckdb.sql(f"select key, psnr from '{scores}/*.parquet'").df(),
        "polars": polars.read_parquet(f"{scores}/*.parquet", columns=["key", "psnr"]).to_pandas(),
        "dask": dask.dataframe.read_parquet(scores, columns=["key", "psnr"]).compute(),
    }
    return {name: f.sort_values("key").reset_index(drop=True) for name, f in frames.items()}


@pytest.fixture
def resumed(tmp_path):
    """12 pairs scored, three outputs changed, the run resumed: (ref, out, run, result, fresh rows)."""
    ref, out = make_dataset(tmp_path, 12, size=96)
    run_dir = tmp_path / "run"
    score(ref, out, run_dir)
    change_outputs(out)
    result = score(ref, out, run_dir, resume=True)
    score(ref, out, tmp_path / "fresh")
    return ref, out, run_dir, result, load_results(tmp_path / "fresh")


def test_after_resume_every_reader_sees_each_key_once_with_its_latest_values(resumed):
    _, _, run_dir, result, fresh = resumed
    assert result.manifest["resume"] == {"reused": 9, "scored": 3}
    expected = fresh[["key", "psnr"]].sort_values("key").reset_index(drop=True)
    for name, frame in every_reader(run_dir).items():
        assert frame["key"].is_unique, name
        pd.testing.assert_frame_equal(frame, expected, check_dtype=False, obj=name)


def test_the_parts_that_held_superseded_rows_are_kept_aside(resumed):
    _, _, run_dir, _, _ = resumed
    aside = sorted(p.name for p in (run_dir / SUPERSEDED_DIR).iterdir())
    assert aside  # the first run's parts that held a changed key
    old = pd.concat([pd.read_parquet(run_dir / SUPERSEDED_DIR / name) for name in aside])
    assert set(CHANGED) <= set(old["key"])
    assert len(load_results(run_dir)) == 12


def test_rows_kept_from_retired_parts_are_still_reused_by_the_next_resume(resumed):
    ref, out, run_dir, _, _ = resumed
    again = score(ref, out, run_dir, resume=True)
    assert again.manifest["resume"] == {"reused": 12, "scored": 0}
    another_config = score(ref, out, run_dir, resume=True, metrics=("psnr", "mse", "ssim"))
    assert another_config.manifest["resume"] == {"reused": 0, "scored": 12}
    for name, frame in every_reader(run_dir).items():
        assert len(frame) == 12 and frame["key"].is_unique, name
    assert load_results(run_dir)["ssim"].notna().all()


def test_a_run_stopped_while_retiring_keeps_the_latest_values_and_the_next_resume_finishes(
    tmp_path, monkeypatch
):
    ref, out = make_dataset(tmp_path, 12, size=96)
    run_dir = tmp_path / "run"
    score(ref, out, run_dir)
    change_outputs(out)

    def stopped(self, target):
        raise KeyboardInterrupt  # the process ends after writing the kept rows, before moving the part

    with monkeypatch.context() as patch:
        patch.setattr(Location, "move", stopped)
        with pytest.raises(KeyboardInterrupt):
            score(ref, out, run_dir, resume=True)
    fresh = score(ref, out, tmp_path / "fresh")
    expected = load_results(tmp_path / "fresh")[["key", "psnr"]]
    pd.testing.assert_frame_equal(load_results(run_dir)[["key", "psnr"]], expected)
    finished = score(ref, out, run_dir, resume=True)
    assert finished.manifest["resume"] == {"reused": 12, "scored": 0} and fresh.complete
    for name, frame in every_reader(run_dir).items():
        assert frame["key"].is_unique, name
        pd.testing.assert_frame_equal(frame, expected, check_dtype=False, obj=name)


def test_a_run_without_superseded_rows_is_left_as_it_is(tmp_path):
    ref, out = make_dataset(tmp_path, 8, size=96)
    run_dir = tmp_path / "run"
    score(ref, out, run_dir)
    before = [p.name for p in part_paths(run_dir)]
    assert retire_superseded_rows(run_dir) == 0
    assert [p.name for p in part_paths(run_dir)] == before and not (run_dir / SUPERSEDED_DIR).exists()


def test_overwrite_clears_the_parts_kept_aside(resumed):
    ref, out, run_dir, _, _ = resumed
    score_folders(
        ref, out, run_dir, ScoreConfig(metrics=("psnr",), scheduler="sync", report=False),
        overwrite=True, progress=False,
    )  # fmt: skip
    assert not (run_dir / SUPERSEDED_DIR).exists()


def readme_reader_lines() -> list[str]:
    """The README's lines that read RUN_DIR/scores with each reader (the Python block importing them)."""
    text = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = text.split("```python\nimport pandas, duckdb, polars, dask.dataframe\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_examples_see_each_key_once(resumed):
    _, _, run_dir, _, _ = resumed
    lines = readme_reader_lines()
    assert len(lines) == 4
    namespace = {"pandas": pd, "duckdb": duckdb, "polars": polars, "dask": dask}
    for line in lines:
        frame = eval(line.replace("RUN_DIR", str(run_dir)), namespace)  # the README's own code
        frame = frame.to_pandas() if isinstance(frame, polars.DataFrame) else frame
        if "key" in frame:
            assert len(frame) == 12 and frame["key"].is_unique, line
        else:  # the DuckDB line: one mean per group, over 12 rows
            assert len(frame) == 3, line
