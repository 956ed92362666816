"""`iqa similar`: near-duplicates of real photos are found as nearest matches; outputs and the page are sane.

Near-duplicates: JPEG q=40, resized to 70 %, cropped by 4 % on each border, brightened by 12 %. A crop of
8 % per border shifts the content by ~19 % in scale after the common-size policy; SSIM and PSNR
(pixel-aligned metrics) then no longer single it out reliably, so the crop tested here is 4 %.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import sha256_of
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.metrics import ms_ssim, psnr, ssim
from pipeline.metrics.ssim import gaussian_window
from pipeline.similarity.pairwise import lpips_matrix, ms_ssim_matrix, psnr_matrix, ssim_matrix, ssim_stats
from pipeline.similarity.prepare import prepare_image

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
ORIGINALS = ("astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png")
OTHERS = ("camera.png", "rocket.jpg", "page.png", "moon.png", "retina.jpg", "hubble_deep_field.jpg")
VARIANTS = ("jpeg40", "resized70", "cropped", "brighter")
HOSTILE = "<img src=x onerror=alert(1)>&amp;.png"

runner = CliRunner()


def _photo(name: str) -> Image.Image:
    image = Image.open(SKIMAGE_DATA / name)
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _variant(image: Image.Image, kind: str) -> Image.Image:
    if kind == "jpeg40":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=40)
        return Image.open(io.BytesIO(buffer.getvalue()))
    if kind == "resized70":
        return image.resize((round(image.width * 0.7), round(image.height * 0.7)), Image.Resampling.BICUBIC)
    if kind == "cropped":
        dx, dy = round(image.width * 0.04), round(image.height * 0.04)
        return image.crop((dx, dy, image.width - dx, image.height - dy))
    return ImageEnhance.Brightness(image).enhance(1.12)


@pytest.fixture(scope="module")
def photo_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`all`: originals, others and 4 near-duplicates of each original; `dups` and `originals` apart."""
    root = tmp_path_factory.mktemp("similar")
    everything, dups, originals = root / "all", root / "dups", root / "originals"
    for folder in (everything, dups, originals, everything / "dup"):
        folder.mkdir(parents=True, exist_ok=True)
    for name in ORIGINALS + OTHERS:
        if not (SKIMAGE_DATA / name).exists():
            continue
        stem = Path(name).stem
        image = _photo(name)
        image.save(everything / f"{stem}.png")
        if name in ORIGINALS:
            image.save(originals / f"{stem}.png")
            for kind in VARIANTS:
                _variant(image, kind).save(everything / "dup" / f"{stem}__{kind}.png")
                _variant(image, kind).save(dups / f"{stem}__{kind}.png")
    _photo("camera.png").save(everything / HOSTILE)
    return {"all": everything, "dups": dups, "originals": originals}


def _run(*args: str) -> str:
    result = runner.invoke(app, ["similar", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _nearest(run_dir: Path) -> dict[str, str]:
    frame = pd.read_csv(run_dir / "nearest.csv")
    return dict(zip(frame["image"], frame["nearest"], strict=True))


def _original_of(name: str) -> str:
    return Path(name).stem.split("__")[0] + ".png"


@pytest.mark.parametrize("metric", ["ssim", "psnr"])
def test_near_duplicates_are_nearest_matches(
    photo_dirs: dict[str, Path], tmp_path: Path, metric: str
) -> None:
    run_dir = tmp_path / "run"
    output = _run(str(photo_dirs["all"]), "-o", str(run_dir), "--metric", metric, "--scheduler", "sync")
    nearest = _nearest(run_dir)
    for name, match in nearest.items():
        if name.startswith("dup/"):
            assert _original_of(match) == _original_of(name), (name, match)
    for original in ORIGINALS:
        stem = Path(original).stem
        assert nearest[f"{stem}.png"].startswith(f"dup/{stem}__"), (original, nearest[f"{stem}.png"])
    assert "->" in output and "similarity.parquet" in output

    count = len(nearest)
    frame = pd.read_parquet(run_dir / "similarity.parquet")
    assert len(frame) == count * (count - 1)
    assert not (frame["a"].astype(str) == frame["b"].astype(str)).any()
    assert set(frame["metric"].astype(str)) == {metric}
    forward = frame.set_index([frame["a"].astype(str), frame["b"].astype(str)])["value"]
    backward = frame.set_index([frame["b"].astype(str), frame["a"].astype(str)])["value"]
    pd.testing.assert_series_equal(forward.sort_index(), backward.sort_index(), check_names=False)


@pytest.mark.slow
def test_against_mode_embedded_cluster(photo_dirs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "against"
    _run(
        str(photo_dirs["dups"]),
        "--against",
        str(photo_dirs["originals"]),
        "-o",
        str(run_dir),
        "--workers",
        "2",
        "--block",
        "5",
    )
    nearest = _nearest(run_dir)
    assert len(nearest) == 4 * len(ORIGINALS)
    assert all(match == _original_of(name) for name, match in nearest.items()), nearest
    frame = pd.read_parquet(run_dir / "similarity.parquet")
    assert len(frame) == 4 * len(ORIGINALS) * len(ORIGINALS)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["comparisons"] == len(frame) and manifest["timings"]["compare_s"] > 0


def test_html_is_self_contained_and_escapes_names(photo_dirs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "page"
    _run(str(photo_dirs["all"]), "-o", str(run_dir), "--scheduler", "sync", "--size", "64", "--block", "7")
    html = (run_dir / "similar.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", html)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;amp;.png" in html
    assert html.count("data:image/png;base64,") >= 1 and "data:image/jpeg;base64," in html


def test_unreadable_file_is_skipped_with_reason(photo_dirs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("astronaut.png", "coffee.png", "camera.png"):
        (folder / name).write_bytes((photo_dirs["all"] / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    run_dir = tmp_path / "run"
    output = _run(str(folder), "-o", str(run_dir), "--scheduler", "sync", "--size", "64")
    assert "skipped:" in output and "broken.png" in output
    frame = pd.read_parquet(run_dir / "similarity.parquet")
    assert len(frame) == 3 * 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s["path"] for s in manifest["skipped"]] == [str(folder / "broken.png")]


def test_usage_errors(photo_dirs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _run(str(photo_dirs["originals"]), "-o", str(run_dir), "--scheduler", "sync", "--size", "32")
    again = runner.invoke(app, ["similar", str(photo_dirs["originals"]), "-o", str(run_dir)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    missing = runner.invoke(app, ["similar", str(tmp_path / "nope"), "-o", str(run_dir)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    small = runner.invoke(app, ["similar", str(photo_dirs["originals"]), "-o", str(run_dir), "--size", "8"])
    assert small.exit_code == 2 and "--size" in small.output


def test_bad_lpips_weights_stop_before_the_run_directory(photo_dirs: dict[str, Path], tmp_path: Path) -> None:
    truncated = tmp_path / "my-alexnet.pth"
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 1000)
    lpips_options = ["--metric", "lpips", "--lpips-weights", str(truncated), "--scheduler", "sync"]
    fresh = runner.invoke(
        app, ["similar", str(photo_dirs["originals"]), "-o", str(tmp_path / "new"), *lpips_options]
    )
    assert fresh.exit_code == 2 and not (tmp_path / "new").exists()
    (line,) = fresh.output.splitlines()
    assert line.startswith("error: ") and str(truncated) in line and "cannot be loaded" in line
    run_dir = tmp_path / "run"
    _run(str(photo_dirs["originals"]), "-o", str(run_dir), "--scheduler", "sync", "--size", "32")
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    again = runner.invoke(
        app, ["similar", str(photo_dirs["originals"]), "-o", str(run_dir), *lpips_options, "--overwrite"]
    )
    assert again.exit_code == 2 and "Traceback" not in again.output
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before


def test_common_size_policy_keeps_aspect_and_crops_centre(tmp_path: Path) -> None:
    bands = np.repeat(np.array([0, 128, 255], dtype=np.uint8), 100)
    Image.fromarray(np.tile(bands[None, :], (100, 1))).save(tmp_path / "wide.png")
    prepared = prepare_image(str(tmp_path / "wide.png"), 50)
    assert prepared.shape == (3, 50, 50)
    assert torch.equal(prepared[0], prepared[2])
    torch.testing.assert_close(prepared[:, :, 3:47], torch.full((3, 50, 44), 128 / 255), atol=1e-3, rtol=0)


def test_pairwise_matrices_match_library_metrics() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 170, 170, generator=generator)
    b = (0.7 * a[[1, 2, 3]] + 0.3 * torch.rand(3, 3, 170, 170, generator=generator)).clamp(0, 1)
    window = gaussian_window(dtype=torch.float32)

    def reference(metric, **kwargs) -> torch.Tensor:
        return torch.stack(
            [metric(a[i : i + 1].expand(3, -1, -1, -1), b, **kwargs) for i in range(4)]
        ).double()

    got = ssim_matrix(ssim_stats(a, window), ssim_stats(b, window))
    torch.testing.assert_close(got, reference(ssim, data_range=1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(psnr_matrix(a, b), reference(psnr, data_range=1.0), atol=1e-4, rtol=0)
    got = ms_ssim_matrix(a, b, window, scales=5)
    torch.testing.assert_close(got, reference(ms_ssim, data_range=1.0), atol=1e-5, rtol=0)


def test_an_lpips_search_records_its_verified_backbone(
    photo_dirs: dict[str, Path], alex_weights: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "lpips"
    options = [
        "--metric",
        "lpips",
        "--lpips-weights",
        str(alex_weights),
        "--scheduler",
        "sync",
        "--size",
        "64",
    ]
    _run(str(photo_dirs["originals"]), "-o", str(run_dir), *options)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["lpips_backbone"] == str(alex_weights.resolve())
    assert manifest["lpips_backbone_sha256"] == sha256_of(alex_weights)
    plain = tmp_path / "ssim"
    _run(str(photo_dirs["originals"]), "-o", str(plain), "--scheduler", "sync", "--size", "32")
    assert json.loads((plain / "manifest.json").read_text())["lpips_backbone_sha256"] is None


def test_lpips_matrix_matches_lpips(checkpoint_store: Path) -> None:
    from pipeline.metrics import build_lpips_network, lpips

    network = build_lpips_network("alex", str(checkpoint_store / "alex-seed0.pth"), allow_download=False)
    generator = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 3, 64, 64, generator=generator), torch.rand(2, 3, 64, 64, generator=generator)
    with torch.inference_mode():
        got = lpips_matrix(a, b, network)
        expected = torch.stack(
            [lpips(a[i : i + 1].expand(2, -1, -1, -1), b, data_range=1.0, network=network) for i in range(3)]
        )
    torch.testing.assert_close(got, expected.double(), atol=1e-5, rtol=0)
