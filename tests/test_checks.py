"""pipeline/metrics/checks.py: the input checks of the metric functions, whose messages carry the shapes
and values that were wrong."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.metrics.checks import check_data_range, check_min_side, check_pair, check_same_shape, needs_grad


def test_pairs_must_match_in_shape_rank_and_be_floating():
    check_pair(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8))
    check_pair(torch.zeros(1, 1, 4, 8, 8), torch.ones(1, 1, 4, 8, 8), ndim=5)
    with pytest.raises(ValueError, match=r"same dimensions, but got \(1, 3, 8, 8\) and \(1, 1, 8, 8\)\.$"):
        check_pair(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"^Expected 4-D tensors \(N, C, \.\.\.\), got shape \(3, 8, 8\)\.$"):
        check_pair(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(
        ValueError, match=r"^Expected floating point tensors, got torch\.uint8 and torch\.float32\.$"
    ):
        check_pair(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.zeros(1, 1, 8, 8))
    check_same_shape(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("value", [255, 1.0, 65535.0, 1e-3])
def test_a_positive_finite_data_range_is_a_float(value):
    checked = check_data_range(value)
    assert isinstance(checked, float) and checked == value


@pytest.mark.parametrize("value", [0, -1.0, math.inf, -math.inf, math.nan])
def test_other_data_ranges_are_refused_naming_the_value(value):
    with pytest.raises(ValueError, match=rf"^data_range must be a positive finite number, got {value!r}\.$"):
        check_data_range(value)


def test_min_side_names_what_needs_it_and_the_sides():
    check_min_side(torch.zeros(1, 1, 11, 11), 11, "SSIM")
    with pytest.raises(
        ValueError, match=r"^MS-SSIM needs every spatial side >= 161 px, got \(4, 200, 160\)\.$"
    ):
        check_min_side(torch.zeros(1, 1, 4, 200, 160), 161, "MS-SSIM")


def test_needs_grad_only_when_autograd_records():
    plain, tracked = torch.zeros(2), torch.zeros(2, requires_grad=True)
    assert needs_grad(plain, tracked) and not needs_grad(plain)
    with torch.no_grad():
        assert not needs_grad(tracked)
    with torch.inference_mode():
        assert not needs_grad(tracked)
