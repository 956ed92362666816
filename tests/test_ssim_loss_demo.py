"""scripts/ssim_loss_demo.py: Adam on SSIMLoss reaches SSIM >= 0.95 on a small real photo and writes a GIF."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ssim_loss_demo.py"


@pytest.fixture(scope="module")
def demo():
    """The script imported as a module, run with one intra-op thread (tiny tensors)."""
    spec = importlib.util.spec_from_file_location("ssim_loss_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module
    torch.set_num_threads(threads)


def test_demo_reaches_the_target_and_writes_an_animated_gif(demo, tmp_path, capsys):
    out = tmp_path / "ssim.gif"
    code = demo.main(["--size", "48", "--every", "2", "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    match = re.search(r"steps: (\d+)\s+final SSIM: ([0-9.]+)", printed)
    assert match, printed
    assert float(match.group(2)) >= 0.95
    with Image.open(out) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames > 1
        assert gif.size == (2 * 3 * 48, 3 * 48 + demo.HEADER_PX)


def test_demo_exits_1_when_the_target_is_not_reached(demo, tmp_path, capsys):
    out = tmp_path / "short.gif"
    assert demo.main(["--size", "24", "--max-steps", "2", "-o", str(out)]) == 1
    assert "not reached in 2 steps" in capsys.readouterr().err
    with Image.open(out) as gif:
        assert gif.n_frames == 2


def test_demo_rejects_a_size_below_the_window(demo, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--size", "8", "-o", str(tmp_path / "x.gif")])
    assert exit_info.value.code == 2
