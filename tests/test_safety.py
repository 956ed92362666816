"""Issue 7: names from input folders are untrusted; nothing from them is executed, unpickled or escapes.

- keys stay relative (no `..`, no absolute path) and the run directory only ever receives
  `scores/part-NNNNN.parquet`, `manifest.json` and `report.html`, whatever the input names are;
- weights are loaded with `torch.load(..., weights_only=True)`; `pipeline/` has no pickle, eval or exec;
- an object-dtype `.npy` becomes an error row and its pickle payload never runs;
- the report escapes every name (DESIGN.md section 9).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import degrade, real_image
from PIL import Image

import pipeline
from pipeline.config import ScoreConfig
from pipeline.discover import discover_pairs
from pipeline.manifest import read_manifest
from pipeline.results import load_results
from pipeline.scoring import score_folders
from pipeline.worker import PairTask, ShardSettings, score_shard

PACKAGE = Path(pipeline.__file__).parent
RUN_FILE = re.compile(r"^(manifest\.json|report\.html|scores/part-\d{5,}\.parquet)$")
HOSTILE = (
    "foo..png",
    "%2e%2e%2fescape.png",
    "..%2f..%2fetc%2fpasswd.png",
    "<img src=x onerror=alert(1)>.png",
    "<script>alert(1)</script>.png",
    "$(touch pwned).png",
    "`touch pwned2`.png",
    "--overwrite.png",
    " leading and trailing .png",
    "new\nline.png",
    "tab\there.png",
)


def hostile_folders(root: Path) -> tuple[Path, Path, set[str]]:
    """Reference and output folders full of hostile names; returns the keys that must pair."""
    ref, out = root / "ref", root / "out"
    image = real_image("camera.png")[:48, :48]
    expected = set()
    for name in HOSTILE:
        for folder, array in ((ref, image), (out, degrade(image, "noise"))):
            path = folder / name
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path, format="PNG")
            except OSError:
                break
        else:
            if not name.startswith("."):
                expected.add(name[: -len(".png")])
    for folder in (ref, out):
        Image.fromarray(image).save(folder / "..hidden.png", format="PNG")
        Image.fromarray(image).save(folder / "a\\..\\..\\backslash.png", format="PNG")
        fd = os.open(os.fsencode(folder) + b"/not-utf8-\xff.png", os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
    return ref, out, expected


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_names_stay_inside_the_run_directory(tmp_path, monkeypatch):
    ref, out, expected = hostile_folders(tmp_path / "inputs")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    outside_before = tree(tmp_path)
    run_dir = tmp_path / "run"
    pipeline.score(ref, out, run_dir, metrics=("psnr", "ssim"), scheduler="sync", progress=False)

    written = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    assert written and all(RUN_FILE.match(name) for name in written), written
    assert tree(tmp_path) - outside_before == {"run", *(f"run/{name}" for name in written), "run/scores"}
    assert not list(work.iterdir()), "a name was executed as a shell command"

    frame = load_results(run_dir)
    assert set(frame.key) == expected and (frame.status == "ok").all()
    for row in frame.itertuples():
        assert not row.key.startswith("/") and ".." not in row.key.split("/")
        assert Path(row.ref_path).resolve().is_relative_to(ref.resolve())
        assert Path(row.out_path).resolve().is_relative_to(out.resolve())
    reasons = {Path(s["path"]).name: s["reason"] for s in read_manifest(run_dir)["skipped"]}
    assert "backslash" in reasons["a\\..\\..\\backslash.png"]
    assert any("not valid UTF-8" in reason for reason in reasons.values())

    report = (run_dir / "report.html").read_text(encoding="utf-8")
    for raw in ("<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "onerror=alert(1)>"):
        assert raw not in report


def test_regex_mapping_cannot_produce_a_parent_key(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    image = real_image("camera.png")[:32, :32]
    for folder, name in ((ref, "x.png"), (out, "up_x.png"), (out, "abs_x.png")):
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / name)
    pairing = discover_pairs(ref, out, output_regex=r"up_(?P<key>x)|abs_(x)")
    assert [p.key for p in pairing.pairs] == ["x"]
    hostile = discover_pairs(ref, out, output_regex=r"(?P<key>.*)")
    assert all(".." not in p.key.split("/") for p in hostile.pairs)
    escaping = discover_pairs(ref, out, output_regex=r"up_(?P<key>x)")
    assert not escaping.skipped or all("not a relative path" in s["reason"] for s in escaping.skipped)


class OpensAFile:
    """Unpickling this creates (truncates) the file at `path`: proof that a pickle payload ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_object_npy_is_an_error_row_and_never_unpickled(tmp_path):
    marker = tmp_path / "payload-ran"
    payload = np.array([OpensAFile(str(marker))], dtype=object)
    hostile = tmp_path / "out" / "image.npy"
    hostile.parent.mkdir()
    np.save(hostile, payload, allow_pickle=True)

    control = tmp_path / "control-ran"
    np.save(tmp_path / "control.npy", np.array([OpensAFile(str(control))], dtype=object), allow_pickle=True)
    np.load(tmp_path / "control.npy", allow_pickle=True)
    assert control.exists(), "the payload is live: unpickling it creates a file"

    reference = tmp_path / "ref" / "image.npy"
    reference.parent.mkdir()
    np.save(reference, real_image("camera.png")[:32, :32])
    (row,) = score_shard(
        [PairTask("image", "", str(reference), str(hostile))], ShardSettings(metrics=("psnr",))
    ).rows
    assert row.status == "error"
    assert str(hostile) in row.error and "Python objects" in row.error
    assert not marker.exists()

    config = ScoreConfig(metrics=("psnr",), scheduler="sync", report=False)
    score_folders(tmp_path / "ref", tmp_path / "out", tmp_path / "run", config, progress=False)
    assert load_results(tmp_path / "run").status.tolist() == ["error"]
    assert not marker.exists()


def calls(tree_: ast.AST):
    for node in ast.walk(tree_):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def source_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    return files


def test_source_never_unpickles_or_evaluates():
    banned_modules = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}
    for path in source_files():
        parsed = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(parsed):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                assert not {n.split(".")[0] for n in names} & banned_modules, (path, ast.unparse(node))
        for node, func in calls(parsed):
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}"
            assert func not in ("eval", "exec", "compile", "__import__", "os.system"), where
            assert not func.endswith(("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load")), where
            keywords = {k.arg: k.value for k in node.keywords}
            if func == "torch.load":
                assert isinstance(keywords.get("weights_only"), ast.Constant), where
                assert keywords["weights_only"].value is True, where
            if func in ("np.load", "numpy.load"):
                assert isinstance(keywords.get("allow_pickle"), ast.Constant), where
                assert keywords["allow_pickle"].value is False, where
            if "allow_pickle" in keywords:
                assert ast.literal_eval(keywords["allow_pickle"]) is False, where
            if func.startswith("subprocess.") or "shell" in keywords:
                pytest.fail(f"pipeline/ runs a process: {where}")


def test_every_torch_load_at_run_time_is_weights_only(alex_weights, monkeypatch):
    from pipeline.metrics import build_lpips_network

    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    default_is_safe = (major, minor) >= (2, 6) and not os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    real_load = torch.load
    seen = []

    def recording_load(*args, **kwargs):
        seen.append((args[0] if args else kwargs.get("f"), kwargs.get("weights_only")))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    build_lpips_network("alex", str(alex_weights), allow_download=False)
    assert seen
    for source, weights_only in seen:
        assert weights_only is True or (weights_only is None and default_is_safe), source
