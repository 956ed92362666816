"""Benchmark Winograd against oneDNN's direct convolution for LPIPS-AlexNet on one CPU thread.

Per layer (conv2-conv5 at a 512 px input, channels-last input from the network on a photo): oneDNN
`F.conv2d` + in-place ReLU as the network runs it, against `WinogradConv2d` with the ReLU fused, and the
max |difference| of both to a float64 convolution. Then the whole `layerwise_distance` of a 512 x 512
photo pair with `perceptual.USE_WINOGRAD` off and on, and its LPIPS against the `lpips` package. Variants
run interleaved (A, B, A, B, ...) in one process; medians are printed. The AlexNet backbone is seeded
random weights (offline): speed does not depend on the values.

    .venv/bin/python scripts/bench_winograd.py [--rounds 21] [--size 512] [--tuned-allocator]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


def interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median milliseconds of each variant, the variants called in turn `rounds` times after one warm-up."""
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def photo_pair(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """astronaut.png at size x size and a blurred, noisy copy: (1, 3, size, size) x2 in [0, 255]."""
    image = Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB").resize((size, size), Image.BICUBIC)
    reference = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(0).normal(0, 8, reference.shape)
    degraded = np.asarray(image.resize((size // 2, size // 2)).resize((size, size)), dtype=np.float32)
    degraded = np.clip(degraded + noise, 0, 255).astype(np.float32)
    return tuple(torch.from_numpy(a.copy()).permute(2, 0, 1)[None] for a in (reference, degraded))


def seeded_backbone(folder: Path) -> Path:
    """Seeded AlexNet checkpoint where torchvision (and so the `lpips` package) finds it."""
    from pipeline.metrics.perceptual import backbone_cache_path

    os.environ["TORCH_HOME"] = str(folder)
    path = backbone_cache_path("alex")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def conv_inputs(network: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, torch.nn.Conv2d, torch.Tensor]]:
    """(name, conv, its channels-last input) for the trunk's 5x5 and 3x3 convolutions, on the direct path."""
    found = []
    index = 0
    with torch.inference_mode():
        for slice_index in range(network.L):
            for module in getattr(network.net, f"slice{slice_index + 1}"):
                if isinstance(module, torch.nn.Conv2d):
                    index += 1
                    if module.kernel_size[0] in (3, 5) and module.stride == (1, 1):
                        found.append((f"conv{index}", module, x))
                x = module(x)
    return found


def layer_table(network: torch.nn.Module, trunk_input: torch.Tensor, rounds: int) -> None:
    from pipeline.metrics.winograd import WinogradConv2d

    print("| layer | input | oneDNN conv+ReLU ms | Winograd ms | speedup ", end="")
    print("| max abs diff vs float64: oneDNN | Winograd |\n|---|---|---|---|---|---|---|")
    for name, conv, x in conv_inputs(network, trunk_input):
        prepared = WinogradConv2d.from_conv(conv)

        def direct(conv: torch.nn.Conv2d = conv, x: torch.Tensor = x) -> torch.Tensor:
            return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding).relu_()

        def fast(prepared: WinogradConv2d = prepared, x: torch.Tensor = x) -> torch.Tensor:
            return prepared(x, relu=True)

        with torch.inference_mode():
            times = interleaved({"onednn": direct, "winograd": fast}, rounds)
            exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=conv.padding)
            exact = exact.relu_()
            errors = [(run() - exact).abs().max().item() for run in (direct, fast)]
        scale = exact.abs().max().item()
        m, r = prepared.transform.output, prepared.transform.kernel
        cells = [
            f"{name} F({m}x{m},{r}x{r})",
            str(tuple(x.shape[1:])),
            f"{times['onednn']:.2f}",
            f"{times['winograd']:.2f}",
            f"{times['onednn'] / times['winograd']:.2f}x",
            *(f"{error:.2e} ({error / scale:.1e} of max)" for error in errors),
        ]
        print("| " + " | ".join(cells) + " |")


def whole_pair(network: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rounds: int) -> None:
    import lpips as lpips_package

    from pipeline.metrics import perceptual

    with torch.inference_mode():
        trunk = [perceptual._trunk_input(network, t, 255.0, torch.float32) for t in (x, y)]

    def distance(use: bool) -> Callable[[], float]:
        def run() -> float:
            perceptual.USE_WINOGRAD = use
            with torch.inference_mode():
                return perceptual.layerwise_distance(network, *trunk).item()

        return run

    times = interleaved({"before": distance(False), "after": distance(True)}, rounds)
    before, after = distance(False)(), distance(True)()
    perceptual.USE_WINOGRAD = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = lpips_package.LPIPS(net="alex", verbose=False).eval()
    with torch.inference_mode():
        package = reference(x / 127.5 - 1, y / 127.5 - 1).item()
    print(f"\n`layerwise_distance` of a {tuple(x.shape[2:])} RGB pair (after the trunk input):")
    print("| path | ms (median) | LPIPS | abs diff vs lpips package |")
    print("|---|---|---|---|")
    print(f"| before: direct oneDNN | {times['before']:.2f} | {before:.9f} | {abs(before - package):.2e} |")
    print(f"| after: Winograd | {times['after']:.2f} | {after:.9f} | {abs(after - package):.2e} |")
    print(f"speedup {times['before'] / times['after']:.2f}x; |after - before| = {abs(after - before):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--tuned-allocator",
        action="store_true",
        help="keep freed memory as scoring processes do (allocator.py)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.tuned_allocator:
        from pipeline.allocator import keep_freed_memory

        keep_freed_memory()
    from pipeline.metrics.perceptual import _trunk_input, build_lpips_network

    with tempfile.TemporaryDirectory() as folder:
        seeded_backbone(Path(folder))
        network = build_lpips_network("alex", allow_download=False)
        x, y = photo_pair(args.size)
        print(f"torch {torch.__version__}, 1 thread, tuned allocator: {args.tuned_allocator}, ", end="")
        print(f"rounds: {args.rounds}\n")
        with torch.inference_mode():
            trunk_input = _trunk_input(network, x, 255.0, torch.float32)
        layer_table(network, trunk_input, args.rounds)
        whole_pair(network, x, y, args.rounds)


if __name__ == "__main__":
    main()
