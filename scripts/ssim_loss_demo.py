"""Optimise seeded random noise towards a real photo with Adam on `SSIMLoss`, and save an animated GIF.

    python scripts/ssim_loss_demo.py -o ssim_loss.gif                 # astronaut, 128 px, until SSIM >= 0.95
    python scripts/ssim_loss_demo.py --image photo.png --size 96 --every 5 -o out.gif

Each frame shows the current image next to the target, with the step and the SSIM drawn above them.
Exit code 0 when the target SSIM is reached, 1 when `--max-steps` runs out first.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import skimage
import torch
from PIL import Image, ImageDraw

from pipeline.images import read_image
from pipeline.metrics import SSIMLoss, ssim

DEFAULT_IMAGE = Path(skimage.__file__).parent / "data" / "astronaut.png"
HEADER_PX = 16
MIN_DISPLAY_PX = 128


def load_target(path: Path, size: int) -> torch.Tensor:
    """The image at `path`, resized to size x size, as a (1, C, size, size) float32 tensor in [0, 1]."""
    decoded = read_image(path)
    pixels = decoded.pixels.astype(np.float64) / decoded.data_range
    channels = [
        np.asarray(Image.fromarray(pixels[..., c].astype(np.float32)).resize((size, size), Image.BICUBIC))
        for c in range(decoded.channels)
    ]
    target = torch.from_numpy(np.stack(channels)).clamp(0, 1)
    return target.unsqueeze(0)


def to_pil(image: torch.Tensor, scale: int) -> Image.Image:
    """(1, C, H, W) tensor in [0, 1] -> RGB PIL image enlarged `scale` times (nearest neighbour)."""
    array = (image[0].detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).convert("RGB")
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def render_frame(current: torch.Tensor, target: torch.Tensor, step: int, value: float) -> Image.Image:
    """Current image | target, side by side, under a header with the step and the SSIM."""
    scale = max(1, math.ceil(MIN_DISPLAY_PX / current.shape[-1]))
    left, right = to_pil(current, scale), to_pil(target, scale)
    frame = Image.new("RGB", (left.width + right.width, left.height + HEADER_PX), "white")
    frame.paste(left, (0, HEADER_PX))
    frame.paste(right, (left.width, HEADER_PX))
    ImageDraw.Draw(frame).text((3, 2), f"step {step}  SSIM {value:.4f}", fill="black")
    return frame


def optimise(
    target: torch.Tensor, *, target_ssim: float, max_steps: int, every: int, lr: float, seed: int
) -> tuple[list[Image.Image], int, float]:
    """Adam on 1 - SSIM from seeded uniform noise; returns (frames, steps taken, final SSIM)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(target.shape, generator=generator).requires_grad_()
    loss_fn = SSIMLoss(data_range=1.0)
    optimizer = torch.optim.Adam([image], lr=lr)
    step = 0
    value = ssim(image.detach(), target, data_range=1.0).item()
    frames = [render_frame(image, target, step, value)]
    while value < target_ssim and step < max_steps:
        optimizer.zero_grad()
        loss_fn(image, target).backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0, 1)
        step += 1
        value = ssim(image.detach(), target, data_range=1.0).item()
        if step % every == 0 or value >= target_ssim or step == max_steps:
            frames.append(render_frame(image, target, step, value))
    return frames, step, value


def save_gif(frames: list[Image.Image], out: Path, duration_ms: int) -> None:
    """Animated GIF that loops forever; the last frame is held three times as long."""
    out.parent.mkdir(parents=True, exist_ok=True)
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 3]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=Path(__file__).name, description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="target photo (default: astronaut)")
    parser.add_argument("--size", type=int, default=128, help="side of the square target in px (>= 11)")
    parser.add_argument("--target-ssim", type=float, default=0.95, help="stop once SSIM reaches this")
    parser.add_argument("--max-steps", type=int, default=2000, help="give up after this many Adam steps")
    parser.add_argument("--every", type=int, default=2, help="save a frame every N steps")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    parser.add_argument("--duration", type=int, default=80, help="milliseconds per GIF frame")
    parser.add_argument("-o", "--out", type=Path, default=Path("ssim_loss.gif"), help="output GIF")
    args = parser.parse_args(argv)
    if args.size < 11:
        parser.error(f"--size must be >= 11 (the SSIM window), got {args.size}")
    if args.every < 1 or args.max_steps < 1:
        parser.error("--every and --max-steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (0 target reached, 1 not reached)."""
    args = parse_args(argv)
    target = load_target(args.image, args.size)
    started = time.perf_counter()
    frames, steps, value = optimise(
        target,
        target_ssim=args.target_ssim,
        max_steps=args.max_steps,
        every=args.every,
        lr=args.lr,
        seed=args.seed,
    )
    save_gif(frames, args.out, args.duration)
    seconds = time.perf_counter() - started
    print(f"steps: {steps}  final SSIM: {value:.4f}  time: {seconds:.1f} s  frames: {len(frames)}")
    print(f"wrote {args.out}")
    if value < args.target_ssim:
        print(f"target SSIM {args.target_ssim} not reached in {args.max_steps} steps", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
