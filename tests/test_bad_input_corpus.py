"""Issue 7: a corpus of bad and awkward inputs scored next to good pairs, end to end through the CLI.

Every good pair must equal a direct scikit-image computation; every bad item must surface as an error row
naming the file and the problem, or as an entry of a manifest list with a reason; no traceback reaches the
console. Valid-but-unusual images (CMYK, 16-bit gray, palette with transparency, EXIF rotation, 1x1 and 2x2,
names with spaces and non-ASCII characters) are scored ok, with warnings where something was changed.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import PSNR_TOL, SSIM_TOL, degrade, real_image, skimage_ssim
from PIL import Image, ImageOps
from skimage.metrics import peak_signal_noise_ratio
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.manifest import read_manifest
from pipeline.results import load_results

runner = CliRunner()
METRICS = "psnr,ssim,ms_ssim,mse"
FAST = ["--scheduler", "sync", "--no-report", "--no-progress", "--metrics", METRICS]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Corpus:
    """Folders plus what each item should become.

    Attributes:
        good: key -> (reference array, output array, data_range) as decoded independently with Pillow.
        errors: key -> (file name that the message must name, words the message must contain).
        listed: (manifest list, file or key name, words the reason must contain).
        warned: key -> words one of the row's warnings must contain.
    """

    ref: Path
    out: Path
    good: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    listed: list[tuple[str, str, str]] = field(default_factory=list)
    warned: dict[str, str] = field(default_factory=dict)


def png_bytes(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **save)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny, well-formed PNG whose header claims 10 gigapixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def decoded(data: bytes) -> np.ndarray:
    """Independent decode with Pillow: EXIF orientation applied, CMYK/palette to RGB."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode not in ("L", "RGB", "I;16", "I"):
        image = image.convert("RGB")
    return np.asarray(image)


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def build_corpus(root: Path, *, unreadable: bool = True) -> Corpus:
    corpus = Corpus(root / "ref", root / "out")
    ref, out = corpus.ref, corpus.out

    def good(key: str, reference: np.ndarray, output_data: bytes, ext: str = ".png", data_range=255.0):
        put(ref / f"{key}.png", png_bytes(reference))
        put(out / f"{key}{ext}", output_data)
        corpus.good[key] = (reference, decoded(output_data), data_range)

    def bad(key: str, output_data: bytes, words: str, ext: str = ".png") -> Path:
        reference = real_image("camera.png")[:64, :64]
        put(ref / f"{key}.png", png_bytes(reference))
        path = put(out / f"{key}{ext}", output_data)
        corpus.errors[key] = (path.name, words)
        return path

    # Good pairs of real photos.
    for name, kind in (("astronaut.png", "jpeg"), ("coffee.png", "blur"), ("camera.png", "noise")):
        image = real_image(name)[:200, :240]
        good(f"good/{Path(name).stem}", image, png_bytes(degrade(image, kind)))
    chelsea = real_image("chelsea.png")[:180, :200]
    good("names/with space and ünïcode 写真", chelsea, png_bytes(degrade(chelsea, "bicubic2")))
    good("names/ümlaut-ö", chelsea[:, ::-1].copy(), png_bytes(degrade(chelsea[:, ::-1].copy(), "noise")))

    # Valid but unusual images: scored ok, with a warning where something was converted.
    coffee = real_image("coffee.png")[:200, :200]
    good("valid/cmyk", coffee, jpeg_bytes(Image.fromarray(coffee).convert("CMYK")), ext=".jpg")
    corpus.warned["valid/cmyk"] = "CMYK converted to RGB"
    gray16 = real_image("camera.png")[:180, :180].astype(np.uint16) * 257 + 5
    put(ref / "valid/gray16.png", png_bytes(gray16))
    noisy16 = np.clip(gray16 + np.random.default_rng(1).normal(0, 900, gray16.shape), 0, 65535)
    put(out / "valid/gray16.png", png_bytes(noisy16.astype(np.uint16)))
    corpus.good["valid/gray16"] = (gray16, noisy16.astype(np.uint16), 65535.0)
    palette = Image.fromarray(coffee).quantize(64)
    good("valid/palette", coffee, _palette_png(palette))
    corpus.warned["valid/palette"] = "transparency dropped"
    stored = real_image("astronaut.png")[:160, :220]
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_jpeg = jpeg_bytes(Image.fromarray(stored), exif=exif.tobytes())
    good("valid/exif-rotated", np.ascontiguousarray(np.rot90(stored, k=-1)), rotated_jpeg, ext=".jpg")
    corpus.warned["valid/exif-rotated"] = "EXIF orientation 6 applied"
    for side in (1, 2):
        tiny = real_image("camera.png")[:side, :side]
        good(f"valid/tiny{side}x{side}", tiny, png_bytes(255 - tiny))
        corpus.warned[f"valid/tiny{side}x{side}"] = "smaller than the 11 px SSIM window"

    # Bad files on the output side of a pair: error rows.
    whole_png = png_bytes(real_image("camera.png")[:64, :64])
    bad("bad/truncated-png", whole_png[: len(whole_png) // 2], "truncated or corrupt")
    whole_jpeg = jpeg_bytes(Image.fromarray(real_image("astronaut.png")[:64, :64]))
    bad("bad/truncated-jpeg", whole_jpeg[: len(whole_jpeg) // 2], "truncated or corrupt", ext=".jpg")
    bad("bad/zero-bytes", b"", "empty (0 bytes)")
    bad("bad/text", b"this is a text file, not a picture\n", "not an image")
    bad("bad/bomb", bomb_png(), "decompression bomb")
    if unreadable:
        path = bad("bad/unreadable", whole_png, "permission denied")
        path.chmod(0)

    # Entries that never become pairs: manifest lists with a reason.
    (out / "listed/folder.png").mkdir(parents=True)
    put(ref / "listed/folder.png.keep", b"")
    corpus.listed.append(("skipped", "folder.png", "is a directory"))
    os.symlink("..", out / "listed/loop")
    corpus.listed.append(("skipped", "loop", "symlink loop"))
    put(ref / "listed/dup.png", whole_png)
    put(out / "listed/dup.png", whole_png)
    put(out / "listed/dup.jpg", whole_jpeg)
    corpus.listed.append(("duplicates", "listed/dup", "output"))
    put(ref / "listed/no-output.png", whole_png)
    corpus.listed.append(("missing", "listed/no-output", ""))
    put(out / "listed/no-reference.png", whole_png)
    corpus.listed.append(("extra", "listed/no-reference", ""))
    return corpus


def _palette_png(palette: Image.Image) -> bytes:
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Corpus:
    built = build_corpus(tmp_path)
    if IS_ROOT:
        # chmod 000 does not stop root: simulate the EACCES the kernel gives an ordinary user for this file.
        target = str(built.out / "bad/unreadable.png")
        original = pathlib.Path.read_bytes

        def read_bytes(self):
            if str(self) == target:
                raise PermissionError(13, "Permission denied", target)
            return original(self)

        monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    return built


def expected_values(reference: np.ndarray, output: np.ndarray, data_range: float) -> dict[str, float | None]:
    values: dict[str, float | None] = {
        "psnr": peak_signal_noise_ratio(reference, output, data_range=data_range)
    }
    if min(reference.shape[:2]) >= 11:
        values["ssim"] = skimage_ssim(reference, output, data_range)
    else:
        values["ssim"] = None
    return values


def check_run(corpus: Corpus, run_dir: Path) -> None:
    frame = load_results(run_dir).set_index("key")
    manifest = read_manifest(run_dir)
    assert set(frame.index) == set(corpus.good) | set(corpus.errors)

    for key, (reference, output, data_range) in corpus.good.items():
        row = frame.loc[key]
        assert row.status == "ok", (key, row.error)
        expected = expected_values(reference, output, data_range)
        assert abs(row.psnr - expected["psnr"]) < PSNR_TOL, key
        if expected["ssim"] is None:
            assert row.ssim is None or np.isnan(row.ssim), key
        else:
            assert abs(row.ssim - expected["ssim"]) < SSIM_TOL, key
        assert row.bit_depth == (16 if data_range == 65535 else 8)
    for key, words in corpus.warned.items():
        assert any(words in w for w in frame.loc[key, "warnings"]), (key, frame.loc[key, "warnings"])

    for key, (file_name, words) in corpus.errors.items():
        row = frame.loc[key]
        assert row.status == "error", key
        assert file_name in row.error and words in row.error, (key, row.error)
        assert "Traceback" not in row.error and "\n" not in row.error

    for list_name, name, words in corpus.listed:
        entries = manifest[list_name]
        found = [e for e in entries if name in (e.get("path", "") + e.get("key", ""))]
        assert found, (list_name, name, entries)
        assert all(words in (e.get("reason", "") + e.get("side", "")) for e in found), found

    counts = manifest["counts"]
    assert counts["ok"] == len(corpus.good) and counts["error"] == len(corpus.errors)


def test_corpus_through_the_cli(corpus, tmp_path):
    run_dir = tmp_path / "run"
    args = ["score", str(corpus.ref), str(corpus.out), "-o", str(run_dir), *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert f"error={len(corpus.errors)}" in result.output
    check_run(corpus, run_dir)

    allowed = runner.invoke(app, [*args, "--overwrite", "--allow-failures"])
    assert allowed.exit_code == 0, allowed.output
    check_run(corpus, run_dir)


def test_corpus_pairs_listing(corpus):
    result = runner.invoke(app, ["pairs", str(corpus.ref), str(corpus.out), "--limit", "100"])
    assert result.exit_code == 1, result.output  # the corpus has references without output
    assert "symlink loop" in result.output and "is a directory" in result.output
    assert "listed/dup" in result.output


@pytest.mark.slow
def test_corpus_on_a_local_cluster_prints_no_traceback(tmp_path):
    corpus = build_corpus(tmp_path, unreadable=not IS_ROOT)
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "score",
        str(corpus.ref),
        str(corpus.out),
        "-o",
        str(run_dir),
    ]
    options = ["--workers", "2", "--threads", "1", "--metrics", METRICS, "--no-report", "--no-progress"]
    completed = subprocess.run(
        [*command, *options],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUTF8": "1"},
    )
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr and "Traceback" not in completed.stdout
    assert "Some references have no ok row" in completed.stderr
    check_run(corpus, run_dir)
    assert json.loads((run_dir / "manifest.json").read_text())["execution"].startswith("local cluster")
