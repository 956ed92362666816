"""pipeline/choices.py: every named choice defined once and agreeing with the modules that use it."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from pipeline.choices import (
    METRICS,
    SIMILAR_METRICS,
    Choice,
    Convention,
    Device,
    LpipsNet,
    SimilarMetric,
    SizeMismatch,
    Status,
    higher_is_better,
    metric_names,
)
from pipeline.comparison import DEFAULT_TOLERANCES
from pipeline.conventions import SPECS
from pipeline.metrics.lpips_network import BACKBONE_NAMES
from pipeline.metrics.lpips_weights import BACKBONE_FILES
from pipeline.metrics.ssim import WINDOW_SIZE, ms_ssim_min_side
from pipeline.results import SCHEMA, ResultRow


def test_every_metric_is_a_float64_column_of_the_results():
    metric_fields = [field for field in SCHEMA if field.name in METRICS]
    assert [field.name for field in metric_fields] == list(METRICS)
    assert all(field.type == pa.float64() and field.nullable for field in metric_fields)
    row = ResultRow("k", "", "r", "o", "run")
    assert all(getattr(row, name) is None for name in METRICS)


def test_metric_specs_agree_with_the_metric_functions():
    assert list(METRICS) == ["psnr", "ssim", "ms_ssim", "lpips", "mse"]
    assert all(name == spec.name for name, spec in METRICS.items())
    assert METRICS["ssim"].min_side == WINDOW_SIZE == 11
    assert METRICS["ms_ssim"].min_side == ms_ssim_min_side(5) == 161
    assert [name for name, spec in METRICS.items() if spec.needs_network] == ["lpips"]
    assert {name: spec.higher_is_better for name, spec in METRICS.items()} == {
        "psnr": True, "ssim": True, "ms_ssim": True, "lpips": False, "mse": False,
    }  # fmt: skip
    assert all(higher_is_better(name) is spec.higher_is_better for name, spec in METRICS.items())
    assert METRICS["psnr"].unit == "dB"
    with pytest.raises(KeyError):
        higher_is_better("psnrr")


def test_default_tolerances_are_in_each_metrics_unit():
    assert {name: spec.tolerance for name, spec in METRICS.items()} == {
        "psnr": 0.05, "ssim": 0.001, "ms_ssim": 0.001, "lpips": 0.005, "mse": 1.0,
    }  # fmt: skip
    assert {name: spec.tolerance for name, spec in METRICS.items()} == DEFAULT_TOLERANCES


def test_choices_are_their_values():
    assert Convention.SR_PAPER == "sr-paper" and str(Convention.SR_PAPER) == "sr-paper"
    assert f"{SizeMismatch.CROP}" == "crop" and json.dumps(Device.CUDA) == '"cuda"'
    assert Convention("sr-paper") is Convention.SR_PAPER
    assert Convention.values() == (
        *("default", "sr-paper", "skimage-defaults", "matlab", "matlab-downsampled"),
        *("piq", "torchmetrics", "pyiqa"),
    )
    assert Convention("basicsr") is Convention.SR_PAPER  # another name of sr-paper
    assert SizeMismatch.values() == ("error", "crop", "resize")
    assert Device.values() == ("auto", "cpu", "cuda", "mps")
    assert Status.values() == ("ok", "error")
    assert all(issubclass(kind, Choice) for kind in (Convention, SizeMismatch, Device, LpipsNet, Status))
    with pytest.raises(ValueError):
        Convention("matlab-2004")


def test_choices_agree_with_the_modules_that_implement_them():
    assert set(SPECS) == set(Convention)
    assert set(LpipsNet.values()) == set(BACKBONE_NAMES) == set(BACKBONE_FILES)
    assert set(SIMILAR_METRICS) <= set(METRICS) and SimilarMetric.values() == SIMILAR_METRICS


@pytest.mark.parametrize(
    ("given", "names"),
    [
        ("psnr,ssim", ("psnr", "ssim")),
        (" psnr, ssim ,", ("psnr", "ssim")),
        ("ms_ssim", ("ms_ssim",)),
        (",, ,", ()),
        ("", ()),
        (["lpips", " mse "], ("lpips", "mse")),
        (("ssim", "", "psnr"), ("ssim", "psnr")),
    ],
)
def test_metric_names_parsing(given, names):
    assert metric_names(given) == names
