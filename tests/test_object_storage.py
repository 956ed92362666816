"""Runs in object storage: a real S3 API server (moto's standalone server) on 127.0.0.1, s3fs as the client.

The server is started once for the module and stopped at its end; each test works in buckets of its own.
Credentials and the endpoint reach s3fs the standard way (`AWS_*` variables, `AWS_ENDPOINT_URL`) or as
`--storage-option endpoint_url=...`.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pandas as pd
import pytest
from conftest import free_port, make_dataset, one_line_error, s3_environment, start_s3_server, wait_for_port
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.config import build_config
from pipeline.locations import is_url, locate, parse_storage_options, url_protocol
from pipeline.manifest import read_manifest
from pipeline.results import COLUMNS, load_results
from pipeline.scoring import score_pairs, shard_settings

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

runner = CliRunner()
FAST = ("--metrics", "psnr,ssim,ms_ssim", "--scheduler", "sync", "--no-progress")
VALUE_COLUMNS = ["key", "group", "height", "width", "channels", "bit_depth", "psnr", "ssim", "ms_ssim"]
HASH_COLUMNS = ["ref_sha256", "out_sha256", "status"]


@pytest.fixture(scope="module")
def endpoint():
    port = free_port()
    server = start_s3_server(port)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


@pytest.fixture
def s3(endpoint, monkeypatch):
    """The S3 file system, credentials and endpoint in the environment; clean instance caches around."""
    for name, value in s3_environment(endpoint).items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3fs.S3FileSystem()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket(s3):
    """A new empty bucket; its name."""
    name = f"iqa-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    return name


@pytest.fixture
def dataset(tmp_path, s3, bucket):
    """Nine real-photo pairs, local and in the bucket under data/: (ref, out, ref URL, out URL)."""
    ref, out = make_dataset(tmp_path / "local", 9, size=96)
    s3.put(f"{ref}/", f"{bucket}/data/ref/", recursive=True)
    s3.put(f"{out}/", f"{bucket}/data/out/", recursive=True)
    return ref, out, f"s3://{bucket}/data/ref", f"s3://{bucket}/data/out"


def test_a_run_in_the_store_gives_the_values_of_a_local_run(dataset, bucket, s3, tmp_path):
    ref, out, ref_url, out_url = dataset
    local = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    remote = runner.invoke(app, ["score", ref_url, out_url, "-o", f"s3://{bucket}/runs/a", *FAST])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    assert "Traceback" not in remote.output
    local_rows, remote_rows = load_results(tmp_path / "run"), load_results(f"s3://{bucket}/runs/a")
    assert len(remote_rows) == 9 and list(remote_rows.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(
        remote_rows[VALUE_COLUMNS + HASH_COLUMNS], local_rows[VALUE_COLUMNS + HASH_COLUMNS]
    )
    assert remote_rows["ref_path"].str.startswith(f"{ref_url}/").all()
    written = sorted(p.rsplit("/", 1)[1] for p in s3.find(f"{bucket}/runs/a"))
    assert written == ["manifest.json", "part-00000.parquet", "report.html"]


def test_the_manifest_names_the_urls_and_no_storage_option(dataset, bucket, s3, endpoint):
    _, _, ref_url, out_url = dataset
    options = ("--storage-option", f"endpoint_url={endpoint}", "--storage-option", "use_ssl=false")
    result = runner.invoke(app, ["score", ref_url, out_url, "-o", f"s3://{bucket}/runs/b", *FAST, *options])
    assert result.exit_code == 0, result.output
    manifest = s3.cat_file(f"{bucket}/runs/b/manifest.json").decode()
    assert f'"reference_dir": "{ref_url}"' in manifest and f'"output_dir": "{out_url}"' in manifest
    assert endpoint not in manifest and "use_ssl" not in manifest


def test_the_api_and_load_results_take_urls_and_storage_options(dataset, bucket, endpoint, monkeypatch):
    _, _, ref_url, out_url = dataset
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the explicit option names the server
    s3fs.S3FileSystem.clear_instance_cache()
    options = {"endpoint_url": endpoint}
    run = pipeline.score(
        ref_url, out_url, f"s3://{bucket}/runs/api", metrics="psnr", scheduler="sync", progress=False,
        storage_options=options,
    )  # fmt: skip
    assert run.run_dir == f"s3://{bucket}/runs/api" and run.report_path.endswith("/report.html")
    assert len(run.frame) == 9 and run.complete
    frame = pipeline.load_results(f"s3://{bucket}/runs/api/scores", storage_options=options)
    assert frame["psnr"].tolist() == run.frame["psnr"].tolist()


def test_resume_against_the_store_scores_only_what_is_new(dataset, bucket, s3):
    _, _, ref_url, out_url = dataset
    held_back = sorted(s3.find(f"{bucket}/data/out"))[0]
    kept = s3.cat_file(held_back)
    s3.rm(held_back)
    run_url = f"s3://{bucket}/runs/resume"
    first = runner.invoke(app, ["score", ref_url, out_url, "-o", run_url, *FAST, "--allow-failures"])
    assert first.exit_code == 0 and "missing=1" in first.output
    s3.pipe_file(held_back, kept)
    second = runner.invoke(app, ["score", ref_url, out_url, "-o", run_url, *FAST, "--resume"])
    assert second.exit_code == 0, second.output
    manifest = read_manifest(run_url)
    assert manifest["resume"] == {"reused": 8, "scored": 1}
    assert manifest["counts"]["ok"] == 9 and manifest["counts"]["missing"] == 0
    assert len(load_results(run_url)) == 9


def test_an_existing_run_in_the_store_is_refused_then_replaced_with_overwrite(dataset, bucket, s3):
    _, _, ref_url, out_url = dataset
    run_url = f"s3://{bucket}/runs/again"
    assert runner.invoke(app, ["score", ref_url, out_url, "-o", run_url, *FAST]).exit_code == 0
    again = runner.invoke(app, ["score", ref_url, out_url, "-o", run_url, *FAST])
    one_line_error(again, 2, run_url, "already holds a run", "--overwrite")
    replaced = runner.invoke(app, ["score", ref_url, out_url, "-o", run_url, *FAST, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert [p.rsplit("/", 1)[1] for p in s3.find(f"{bucket}/runs/again/scores")] == ["part-00000.parquet"]


def test_compare_and_report_read_runs_in_the_store(dataset, bucket, tmp_path):
    _, _, ref_url, out_url = dataset
    for name in ("base", "cand"):
        assert (
            runner.invoke(app, ["score", ref_url, out_url, "-o", f"s3://{bucket}/{name}", *FAST]).exit_code
            == 0
        )
    compared = runner.invoke(app, ["compare", f"s3://{bucket}/base", f"s3://{bucket}/cand"])
    assert compared.exit_code == 0 and "PASS" in compared.output, compared.output
    page = tmp_path / "page.html"
    reported = runner.invoke(
        app, ["report", f"s3://{bucket}/cand", "--baseline", f"s3://{bucket}/base", "-o", str(page)]
    )
    assert reported.exit_code == 0, reported.output
    html = page.read_text()
    assert "data:image/png;base64," in html and "no picture" not in html  # pictures read from the store


def test_a_missing_bucket_is_one_line_exit_2_before_scoring(dataset, bucket, tmp_path):
    _, _, ref_url, out_url = dataset
    missing_input = runner.invoke(
        app, ["score", "s3://no-such-bucket/ref", out_url, "-o", str(tmp_path / "r")]
    )
    one_line_error(missing_input, 2, "s3://no-such-bucket/ref", "does not exist")
    missing_output = runner.invoke(app, ["score", ref_url, out_url, "-o", "s3://no-such-bucket/run", *FAST])
    one_line_error(missing_output, 2, "s3://no-such-bucket/run", "bucket does not exist")
    assert not (tmp_path / "r").exists()


def test_missing_credentials_are_one_line_exit_2(dataset, monkeypatch, tmp_path):
    _, _, ref_url, out_url = dataset
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    s3fs.S3FileSystem.clear_instance_cache()
    result = runner.invoke(app, ["score", ref_url, out_url, "-o", str(tmp_path / "run"), *FAST])
    one_line_error(result, 2, ref_url, "credentials")
    assert not (tmp_path / "run").exists()


def test_denied_access_is_one_line_exit_2(monkeypatch, tmp_path):
    port = free_port()
    server = start_s3_server(port, INITIAL_NO_AUTH_ACTION_COUNT="0")  # every request checked against IAM
    try:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "AKIAUNKNOWN000000000", "AWS_SECRET_ACCESS_KEY": "wrong",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        listed = runner.invoke(app, ["pairs", "s3://locked/ref", "s3://locked/out"])
        one_line_error(listed, 2, "s3://locked/ref")
        (tmp_path / "ref").mkdir()
        (tmp_path / "out").mkdir()
        save = ["score", str(tmp_path / "ref"), str(tmp_path / "out"), "-o", "s3://locked/run", *FAST]
        one_line_error(runner.invoke(app, save), 2, "s3://locked/run")
    finally:
        server.terminate()
        server.wait(10)
        s3fs.S3FileSystem.clear_instance_cache()


def test_an_unreachable_endpoint_is_one_line_exit_2(dataset, monkeypatch, tmp_path):
    _, _, ref_url, out_url = dataset
    result = runner.invoke(
        app,
        ["pairs", ref_url, out_url, "--storage-option", f"endpoint_url=http://127.0.0.1:{free_port()}"],
    )
    one_line_error(result, 2, ref_url, "Could not connect")


def test_a_url_whose_library_is_missing_names_the_extra(tmp_path):
    result = runner.invoke(
        app, ["score", "nosuchfs://bucket/ref", "nosuchfs://bucket/out", "-o", str(tmp_path)]
    )
    one_line_error(result, 2, "nosuchfs://", "not a storage protocol")
    try:
        import gcsfs  # noqa: F401  (not a test dependency: where it is absent, the message names the extra)
    except ImportError:
        result = runner.invoke(app, ["pairs", "gs://bucket/ref", "gs://bucket/out"])
        one_line_error(result, 2, "gs://bucket/ref", "pip install 'iqa-pipeline[gcs]'")


def test_a_missing_image_in_the_store_becomes_an_error_row(dataset, bucket, s3):
    _, _, ref_url, out_url = dataset
    run_url = f"s3://{bucket}/runs/gone"
    victim = sorted(s3.find(f"{bucket}/data/ref"))[0]
    pairing = pipeline.pairs(ref_url, out_url)
    s3.rm(victim)  # removed between discovery and scoring
    config = build_config(metrics="psnr", scheduler="sync")
    settings = shard_settings(config, ("psnr",), None, "run-x")
    scoring = score_pairs(pairing.pairs, locate(run_url), settings, config, "hash", {}, progress=False)
    assert scoring.status_counts == {"error": 1, "ok": 8}
    rows = load_results(run_url)
    failed = rows[rows.status == "error"].iloc[0]
    assert failed["error"].startswith(f"s3://{victim}") and "does not exist" in failed["error"]


def test_urls_and_plain_paths_are_told_apart():
    assert url_protocol("s3://b/k") == "s3" and is_url("s3://b/k") and is_url("memory://x")
    assert not is_url("data/ref") and not is_url("file:///data/ref") and not is_url("C:/data")
    assert locate("file:///tmp/x").url == "/tmp/x" and locate("file:///tmp/x").local
    assert parse_storage_options(["anon=false", "max_concurrency=4", "endpoint_url=http://h:1"]) == {
        "anon": False, "max_concurrency": 4, "endpoint_url": "http://h:1",
    }  # fmt: skip


def test_explain_reads_folders_in_the_store(dataset, tmp_path):
    ref, out, ref_url, out_url = dataset
    given = ("--ssim", "0.5", "--scheduler", "sync", "--no-progress")
    remote = runner.invoke(app, ["explain", ref_url, out_url, *given, "--json", str(tmp_path / "r.json")])
    local = runner.invoke(app, ["explain", str(ref), str(out), *given, "--json", str(tmp_path / "l.json")])
    assert remote.exit_code == 0 and local.exit_code == 0, remote.output
    assert (tmp_path / "r.json").read_text() == (tmp_path / "l.json").read_text()


@pytest.fixture
def http_folders(tmp_path):
    """Nine real-photo pairs served read-only by Python's HTTP server (directory listings as index pages)."""
    ref, out = make_dataset(tmp_path / "site", 9, size=96)
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(
        command, cwd=tmp_path / "site", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_port(port)
    yield ref, out, f"http://127.0.0.1:{port}/ref", f"http://127.0.0.1:{port}/out"
    server.terminate()
    server.wait(10)


def test_inputs_over_http_give_the_values_of_local_folders_and_a_run_there_is_refused(http_folders, tmp_path):
    ref, out, ref_url, out_url = http_folders
    remote = runner.invoke(app, ["score", ref_url, out_url, "-o", str(tmp_path / "remote"), *FAST])
    local = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "local"), *FAST])
    assert remote.exit_code == 0 and local.exit_code == 0, remote.output
    pd.testing.assert_frame_equal(
        load_results(tmp_path / "remote")[VALUE_COLUMNS + HASH_COLUMNS],
        load_results(tmp_path / "local")[VALUE_COLUMNS + HASH_COLUMNS],
    )
    refused = runner.invoke(app, ["score", ref_url, out_url, "-o", f"{ref_url}/../run", *FAST])
    one_line_error(refused, 2, "read-only")
