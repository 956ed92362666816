"""PSNR and MSE: parity with scikit-image on real photos, and MSE reduced in strips."""

from __future__ import annotations

import importlib

import numpy as np
import torch
from conftest import PSNR_TOL, degrade, image_batch, real_image
from skimage.metrics import peak_signal_noise_ratio

from pipeline.metrics import mse, psnr

psnr_module = importlib.import_module("pipeline.metrics.psnr")


def test_psnr_matches_skimage(photo_pair):
    reference, output = photo_pair
    expected = peak_signal_noise_ratio(reference, output, data_range=255)
    for dtype in (torch.float64, torch.float32):
        got = psnr(image_batch(reference, dtype), image_batch(output, dtype), data_range=255).item()
        assert abs(got - expected) < PSNR_TOL


def test_mse_in_strips_equals_the_whole_image(monkeypatch):
    reference = real_image("coffee.png")
    x = image_batch(reference, torch.float32)
    y = image_batch(degrade(reference, "noise"), torch.float32)
    whole = mse(x, y)
    monkeypatch.setattr(psnr_module, "STRIP_VALUES", 3 * 400 * 7)
    strips = mse(x, y)
    expected = np.mean((reference.astype(np.float64) - degrade(reference, "noise")) ** 2)
    assert abs(strips.item() - expected) / expected < 1e-6
    torch.testing.assert_close(strips, whole, rtol=1e-6, atol=0)
