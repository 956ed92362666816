"""Issue 17: a corpus of the mistakes users make, each ending in its clear outcome through the CLI.

Every case sets up real files, runs one `iqa` command, and checks the documented exit code (2: a usage or
configuration error; 1: a run with failed or missing pairs, or a regression), a fragment of the message
that says what to do, and that no traceback reaches the console.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import degrade, install, real_image, save_image, sha256_of
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
FAST = ["--metrics", "psnr,ssim", "--scheduler", "sync", "--no-report", "--no-progress"]


@dataclass(frozen=True)
class Mistake:
    """A user's mistake: `arguments(tmp_path)` sets up the files and returns the command line."""

    name: str
    arguments: Callable[[Path], list[str]]
    exit_code: int
    fragments: tuple[str, ...]


def folders(root: Path, names: tuple[str, ...] = ("astronaut.png", "camera.png")) -> tuple[Path, Path]:
    """root/ref and root/out: 96 x 96 crops of real photos and their noisy versions."""
    ref, out = root / "ref", root / "out"
    for name in names:
        image = real_image(name)[:96, :96]
        save_image(ref / name, image)
        save_image(out / name, degrade(image, "noise"))
    return ref, out


def score(root: Path, *options: str) -> list[str]:
    ref, out = folders(root)
    return ["score", str(ref), str(out), "-o", str(root / "run"), *FAST, *options]


def sr_paper_without_scale(root: Path) -> list[str]:
    return score(root, "--convention", "sr-paper")


def run_dir_in_use(root: Path) -> list[str]:
    arguments = score(root)
    assert runner.invoke(app, arguments).exit_code == 0
    return arguments


def config_of_the_wrong_type(root: Path) -> list[str]:
    config = root / "iqa.yaml"
    config.write_text("metrics: [psnr]\nms_ssim_scales: '5'\n", encoding="utf-8")
    return score(root, "--config", str(config))


def off_by_one_output(root: Path) -> list[str]:
    arguments = score(root)
    output = root / "out" / "camera.png"
    image = Image.open(output)
    image.crop((0, 0, image.width - 1, image.height)).save(output)
    return arguments


def nightly_name_reused(root: Path) -> list[str]:
    ref, out = folders(root / "data")
    suite = {"name": "photos", "reference": str(ref), "output": str(out), "metrics": ["psnr"]}
    config = {"baseline": "baseline", "runs": "runs", "suites": [suite]}
    path = root / "nightly.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    arguments = ["run", str(path), "--name", "night", "--no-progress"]
    assert runner.invoke(app, arguments).exit_code == 0
    return arguments


def output_key_claimed_twice(root: Path) -> list[str]:
    arguments = score(root)
    Image.open(root / "out" / "camera.png").save(root / "out" / "camera.jpg", quality=90)
    return arguments


def outputs_named_with_a_suffix(root: Path) -> list[str]:
    arguments = score(root)
    for path in sorted((root / "out").glob("*.png")):
        path.rename(path.with_name(f"{path.stem}_x4_SR.png"))
    return arguments


def runs_of_two_conventions(root: Path) -> list[str]:
    arguments = score(root)
    assert runner.invoke(app, arguments).exit_code == 0
    sr_paper = [*score(root), "--convention", "sr-paper", "--scale", "4", "--overwrite"]
    sr_paper[4] = str(root / "sr-paper-run")
    assert runner.invoke(app, sr_paper).exit_code == 0
    return ["compare", str(root / "run"), str(root / "sr-paper-run")]


MISTAKES = [
    Mistake(
        "sr-paper without --scale",
        sr_paper_without_scale,
        2,
        ("convention sr-paper crops the super-resolution scale", "add --scale N", "--crop-border"),
    ),
    Mistake(
        "a run directory that already holds a run",
        run_dir_in_use,
        2,
        ("already holds a run", "--resume", "--overwrite"),
    ),
    Mistake(
        "a config value of the wrong type",
        config_of_the_wrong_type,
        2,
        ("line 2", "ms_ssim_scales", "got '5' (str)"),
    ),
    Mistake(
        "an output one pixel narrower than its reference",
        off_by_one_output,
        1,
        ("failed: camera: size mismatch", "96x96", "95x96", "--size-mismatch crop|resize"),
    ),
    Mistake(
        "an output key claimed by two files",
        output_key_claimed_twice,
        1,
        ("key 'camera' not scored: 2 output files claim it", "camera.jpg", "remove or rename all but one"),
    ),
    Mistake(
        "outputs named with a suffix and no --output-suffix",
        outputs_named_with_a_suffix,
        1,
        ("missing=2", "hint: 2 of 2 missing references match", "add --output-suffix _x4_SR"),
    ),
    Mistake(
        "iqa compare of a default run against an sr-paper run",
        runs_of_two_conventions,
        2,
        ("Runs are not comparable: convention default vs sr-paper", "crop 0 vs 4", "--force"),
    ),
    Mistake(
        "iqa run with the name of a finished night",
        nightly_name_reused,
        2,
        ("already holds the night 'night'", "Give `iqa run` another --name", "--overwrite"),
    ),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda mistake: mistake.name)
def test_each_mistake_ends_in_its_clear_outcome(mistake: Mistake, tmp_path: Path) -> None:
    result = runner.invoke(app, mistake.arguments(tmp_path))
    output = result.stdout + result.stderr
    assert result.exit_code == mistake.exit_code, output
    for fragment in mistake.fragments:
        assert fragment in output, (fragment, output)
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_random_weights_under_torchvisions_name_stop_before_anything_is_written(alex_weights, tmp_path):
    """A file named `alexnet-owt-7be5be79.pth` holding other weights gave meaningless LPIPS values."""
    impostor = install(alex_weights, tmp_path / "weights" / "alexnet-owt-7be5be79.pth")
    arguments = score(tmp_path, "--metrics", "psnr,lpips", "--lpips-weights", str(impostor))
    result = runner.invoke(app, arguments)
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert f"its sha256 starts with {sha256_of(impostor)[:8]}, but its name says 7be5be79" in output
    assert "Traceback" not in output and not (tmp_path / "run").exists()
