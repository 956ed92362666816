"""pipeline/config.py: the typed ScoreConfig, its one-line errors (key, where, given, allowed), YAML config
files, the precedence defaults < file < options, the border crop and the hash of what changes values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.choices import METRICS
from pipeline.config import (
    FIELDS,
    ScoreConfig,
    build_config,
    load_config_file,
    validate_config,
)
from pipeline.errors import ConfigError, UsageError


def config_file(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def file_error(tmp_path: Path, text: str, **options) -> str:
    """The one-line ConfigError of building a config from `text` (and options)."""
    path = config_file(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        build_config(load_config_file(path), **options)
    message = str(raised.value)
    assert "\n" not in message
    return message


# Types are strict


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('ms_ssim_scales: "5"', "ms_ssim_scales: got '5' (str); input should be a valid integer."),
        ("workers: true", "workers: got True (bool); input should be a valid integer."),
        ("scale: 4.0", "scale: got 4.0 (float); input should be a valid integer."),
        ("volumes: 1", "volumes: got 1 (int); input should be a valid boolean."),
        ('report: "yes"', "report: got 'yes' (str); input should be a valid boolean."),
        ('data_range: "255"', "data_range: got '255' (str); input should be a number."),
        ("data_range: true", "data_range: got True (bool); input should be a number."),
        ("data_range: .inf", "data_range: got inf (float); input should be a finite number."),
        ("metrics: 5", "metrics: got 5 (int); expected metric names, e.g. 'psnr,ssim', not a int."),
    ],
)
def test_a_wrong_type_is_one_line_naming_key_file_and_line(tmp_path, line, expected):
    message = file_error(tmp_path, f"metrics: [psnr]\nscale: 2\n{line}\n")
    assert message == f"config file {tmp_path / 'config.yaml'} line 3: {expected}"


@pytest.mark.parametrize(
    ("line", "allowed"),
    [
        ("ms_ssim_scales: 6", "less than or equal to 5"),
        ("ms_ssim_scales: 0", "greater than or equal to 1"),
        ("scale: 0", "greater than or equal to 1"),
        ("crop_border: -1", "greater than or equal to 0"),
        ("group_depth: -2", "greater than or equal to 0"),
        ("threads: 0", "greater than or equal to 1"),
        ("data_range: 0", "greater than 0"),
        ("worst: -1", "greater than or equal to 0"),
    ],
)
def test_a_value_out_of_range_says_what_is_allowed(tmp_path, line, allowed):
    key = line.split(":")[0]
    message = file_error(tmp_path, f"{line}\n")
    assert message.startswith(f"config file {tmp_path / 'config.yaml'} line 1: {key}: got ")
    assert allowed in message


def test_an_unknown_key_names_its_line_and_the_known_keys(tmp_path):
    message = file_error(tmp_path, "metrics: [psnr]\nscale: 2\n\nworkerz: 3\n")
    assert message.startswith(f"config file {tmp_path / 'config.yaml'} line 4: unknown key 'workerz'.")
    assert f"Known keys: {', '.join(FIELDS)}." in message
    with pytest.raises(ConfigError, match=r"^unknown key 'bogus'\. Known keys: metrics, "):
        validate_config({"bogus": 1})


@pytest.mark.parametrize(
    ("key", "given", "expected"),
    [
        (
            "convention",
            "ssim-2004",
            "unknown convention 'ssim-2004'; choose one of default, sr-paper, skimage-defaults, matlab, "
            "matlab-downsampled, piq, torchmetrics, pyiqa.",
        ),
        ("size_mismatch", "pad", "unknown size mismatch 'pad'; choose one of error, crop, resize."),
        ("device", "tpu", "unknown device 'tpu'; choose one of auto, cpu, cuda, mps."),
        ("lpips_net", "resnet", "unknown lpips net 'resnet'; choose one of alex, vgg, squeeze."),
        (
            "metrics",
            "psnr,psnrr",
            f"unknown metric 'psnrr'; choose from {', '.join(METRICS)} or pyiqa:NAME, piq:NAME, "
            "torchmetrics:NAME.",
        ),
        ("metrics", " , ", f"name at least one metric of {', '.join(METRICS)}."),
    ],
)
def test_an_unknown_choice_lists_the_choices(key, given, expected):
    with pytest.raises(ConfigError) as raised:
        validate_config({key: given})
    assert str(raised.value) == f"{key}: got {given!r} (str); {expected}"


def test_config_error_is_a_usage_error_exiting_2():
    with pytest.raises(UsageError) as raised:
        validate_config({"workers": True})
    assert raised.value.exit_code == 2


# Combinations


@pytest.mark.parametrize(
    "mappings",
    [
        {"output_suffix": "_x4", "output_template": "{stem}_x4"},
        {"output_suffix": "_x4", "output_regex": "(?P<key>.*)_x4"},
        {"output_template": "{stem}_x4", "output_regex": "(.*)"},
    ],
)
def test_two_output_mappings_are_refused(mappings):
    with pytest.raises(ConfigError) as raised:
        validate_config(mappings)
    named = [key for key in ("output_suffix", "output_template", "output_regex") if key in mappings]
    assert str(raised.value) == (
        f"use only one of output_suffix, output_template and output_regex, not {' and '.join(named)}."
    )
    for key, value in mappings.items():
        assert getattr(validate_config({key: value}), key) == value


def test_scheduler_and_scheduler_file_are_refused_together(tmp_path):
    with pytest.raises(ConfigError) as raised:
        build_config(scheduler="tcp://127.0.0.1:8786", scheduler_file="scheduler.json")
    assert str(raised.value) == (
        "give either scheduler or scheduler_file, not both "
        "(scheduler from option --scheduler; scheduler_file from option --scheduler-file)."
    )
    config = tmp_path / "c.yaml"
    config.write_text("group_depth: 1\nscheduler_file: s.json\n")
    where = rf"scheduler_file from config file {re.escape(str(config))} line 2"
    with pytest.raises(ConfigError, match=where):
        build_config(load_config_file(config), scheduler="tcp://127.0.0.1:8786")
    assert build_config(scheduler_file="scheduler.json").scheduler_file == "scheduler.json"


# Values


def test_metrics_from_text_or_list_keep_their_order():
    assert validate_config({"metrics": " ssim, psnr ,"}).metrics == ("ssim", "psnr")
    assert validate_config({"metrics": ["lpips", "mse"]}).metrics == ("lpips", "mse")
    default = validate_config({})
    assert default.metrics is None and default.chosen_metrics == tuple(METRICS)


def test_keys_with_dashes_are_the_fields(tmp_path):
    config = build_config(load_config_file(config_file(tmp_path, "crop-border: 2\nms-ssim-scales: 3\n")))
    assert (config.crop_border, config.ms_ssim_scales) == (2, 3)
    message = file_error(tmp_path, "scale: 2\ngroup-depth: -1\n")
    assert "line 2: group_depth: got -1" in message


def test_to_dict_is_json_with_plain_values():
    config = validate_config({"metrics": "psnr", "convention": "sr-paper", "scale": 4, "device": "cpu"})
    values = json.loads(json.dumps(config.to_dict()))
    assert set(values) == set(FIELDS)
    assert values["metrics"] == ["psnr"] and values["convention"] == "sr-paper"
    assert values["device"] == "cpu" and values["scale"] == 4


# Precedence: defaults < config file < options


def test_options_win_over_the_file_and_the_file_over_defaults(tmp_path):
    path = config_file(tmp_path, "metrics: [psnr]\nconvention: sr-paper\nscale: 2\nreport: true\nworst: 3\n")
    config = build_config(load_config_file(path), scale=3, report=False, metrics=None, workers=None)
    assert config.scale == 3 and config.report is False  # options, False included
    assert config.metrics == ("psnr",) and config.convention == "sr-paper" and config.worst == 3  # file
    assert config.workers is None and config.size_mismatch == "error" and config.ms_ssim_scales == 5
    assert build_config(None, scale=3) == validate_config({"scale": 3})


def test_an_option_replaces_a_bad_file_value(tmp_path):
    path = config_file(tmp_path, "workers: true\n")
    assert build_config(load_config_file(path), workers=2).workers == 2


def test_the_error_names_the_option_or_the_file_line(tmp_path):
    path = config_file(tmp_path, "metrics: [psnr]\nms_ssim_scales: 7\n")
    with pytest.raises(ConfigError) as raised:
        build_config(load_config_file(path), ms_ssim_scales="5")
    assert str(raised.value) == "option --ms-ssim-scales: got '5' (str); input should be a valid integer."
    with pytest.raises(ConfigError) as raised:
        build_config(load_config_file(path), crop_border=1)
    assert str(raised.value).startswith(f"config file {path} line 2: ms_ssim_scales: got 7 (int); ")


# Border crop


@pytest.mark.parametrize(
    ("values", "crop"),
    [
        ({}, 0),
        ({"scale": 4}, 0),
        ({"convention": "sr-paper", "crop_border": 0}, 0),
        ({"convention": "sr-paper", "scale": 4}, 4),
        ({"convention": "sr-paper", "scale": 4, "crop_border": 0}, 0),
        ({"convention": "sr-paper", "scale": 4, "crop_border": 2}, 2),
        ({"crop_border": 3}, 3),
    ],
)
def test_effective_crop(values, crop):
    assert validate_config(values).effective_crop == crop


@pytest.mark.parametrize("given", [{}, {"crop_border": 0}, {"scale": 4}])
def test_sr_paper_needs_a_scale_or_an_explicit_crop(tmp_path, given):
    """Forgetting `--scale` under sr-paper silently cropped nothing (Set5 x4: 28.4379 instead of 28.4290)."""
    path = config_file(tmp_path, "metrics: [psnr]\nconvention: sr-paper\n")
    if given:
        assert build_config(load_config_file(path), **given).convention == "sr-paper"
        return
    with pytest.raises(ConfigError) as caught:
        build_config(load_config_file(path))
    message = str(caught.value)
    assert "no scale was given: add --scale N" in message and "--crop-border" in message
    assert f"convention from config file {path} line 2" in message


# The hash of what changes metric values (used by --resume)

VALUE_CHANGES = [
    {"convention": "sr-paper", "crop_border": 0},
    {"scale": 2},
    {"crop_border": 1},
    {"size_mismatch": "crop"},
    {"ms_ssim_scales": 3},
    {"data_range": 1.0},
    {"volumes": True},
    {"lpips_net": "vgg"},
    {"metrics": "psnr,ssim"},
]
EXECUTION_CHANGES = [
    {"scheduler": "sync"},
    {"scheduler_file": "scheduler.json"},
    {"workers": 3},
    {"threads": 2},
    {"device": "cpu"},
    {"shard_pairs": 5},
    {"max_in_flight": 4},
    {"report": False},
    {"worst": 2},
    {"output_suffix": "_x4"},
    {"output_template": "{stem}_x4"},
    {"output_regex": "(.*)"},
    {"group_depth": 2},
    # FID/KID change no row: a resumed run recomputes them whole (docs/dataset-metrics.md)
    {"dataset_metrics": "fid"},
    {"inception_weights": "inception.pth"},
    {"inception_resize": "torch-fidelity"},
    {"kid_subsets": 10},
    {"kid_subset_size": 50},
]


def test_every_field_is_classified_for_the_hash():
    """`lpips_weights` is neither: a path, where the values depend on the file's content (see
    test_scoring.py::test_resume_with_another_lpips_checkpoint_rescores_lpips)."""
    changed = [next(iter(change)) for change in VALUE_CHANGES + EXECUTION_CHANGES]  # the key each changes
    assert sorted([*changed, "lpips_weights"]) == sorted(FIELDS)
    assert set(ScoreConfig.VALUE_FIELDS) == {key for change in VALUE_CHANGES for key in change} - {"metrics"}


@pytest.mark.parametrize("change", VALUE_CHANGES, ids=lambda change: next(iter(change)))
def test_value_hash_changes_with_what_changes_values(change):
    base = validate_config({"scale": 1} if "scale" in change else {})
    assert validate_config(change).value_hash() != base.value_hash()


@pytest.mark.parametrize("change", EXECUTION_CHANGES, ids=lambda change: next(iter(change)))
def test_value_hash_ignores_how_the_run_is_executed(change):
    assert validate_config(change).value_hash() == validate_config({}).value_hash()


def test_value_hash_is_stable_and_short():
    config = validate_config({"metrics": "psnr", "convention": "sr-paper", "scale": 4})
    assert (
        config.value_hash()
        == validate_config({"metrics": ["psnr"], "convention": "sr-paper", "scale": 4}).value_hash()
    )
    assert len(config.value_hash()) == 16 and int(config.value_hash(), 16) >= 0
    every_metric = validate_config({"metrics": list(METRICS)})
    assert every_metric.value_hash() == validate_config({}).value_hash()


# Config files


def test_load_config_file_records_the_line_of_each_key(tmp_path):
    path = config_file(tmp_path, "# scoring\nmetrics: [psnr, ssim]\n\nscale: 4\ncrop-border: 2\n")
    loaded = load_config_file(path)
    assert loaded.values == {"metrics": ["psnr", "ssim"], "scale": 4, "crop_border": 2}
    assert loaded.lines == {"metrics": 2, "scale": 4, "crop_border": 5}
    assert loaded.where("scale") == f"config file {path} line 4"
    assert loaded.where("workers") == f"config file {path}"


def test_an_empty_file_is_the_defaults(tmp_path):
    loaded = load_config_file(config_file(tmp_path, "# nothing yet\n"))
    assert loaded.values == {}
    assert build_config(loaded) == ScoreConfig()


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("metrics: [psnr, ssim]\nscale: 4\nconvention: [sr-paper\n", 4),
        ("metrics: [psnr\nscale: 4\n", 2),
        ("scale: 4\n  convention: sr-paper\n", 2),
        ("scale: 4\nscale: [\n", 3),
    ],
)
def test_bad_yaml_names_the_file_and_the_line(tmp_path, text, line):
    path = config_file(tmp_path, text, "bad.yaml")
    with pytest.raises(ConfigError) as raised:
        load_config_file(path)
    message = str(raised.value)
    assert message.startswith(f"Config file {path} line {line} is not valid YAML: ")
    assert "\n" not in message


def test_a_file_that_is_not_a_mapping_or_cannot_be_read(tmp_path):
    with pytest.raises(ConfigError, match=r"list\.yaml must hold a mapping of key: value, got list"):
        load_config_file(config_file(tmp_path, "- psnr\n- ssim\n", "list.yaml"))
    with pytest.raises(ConfigError, match=r"Cannot read config file .*missing\.yaml: No such file"):
        load_config_file(tmp_path / "missing.yaml")
