"""pipeline/pairing_hints.py: each hint on a real folder tree, and the option or folder it names pairs it."""

from __future__ import annotations

import pytest
from conftest import touch

from pipeline.discover import discover_pairs
from pipeline.pairing_hints import pairing_hints

REFS = ("01.png", "02.png", "sub/03.png")


@pytest.mark.parametrize(
    ("outputs", "option", "words"),
    [
        (("01_x4_SR.png", "02_x4_SR.png", "sub/03_x4_SR.jpg"), {"output_suffix": "_x4_SR"},
         "named with the suffix '_x4_SR' (e.g. {out}/01_x4_SR.png for {ref}/01.png): "
         "add --output-suffix _x4_SR."),
        (("SR_01.png", "SR_02.png", "sub/SR_03.png"), {"output_template": "SR_{stem}"},
         "named with the prefix 'SR_' (e.g. {out}/SR_01.png for {ref}/01.png): "
         "add --output-template 'SR_{{stem}}'."),
        (("01.png.jpg", "02.png.jpg", "sub/03.png.jpg"), {"output_suffix": ".png"},
         "with a second extension '.png' (e.g. {out}/01.png.jpg for {ref}/01.png): "
         "add --output-suffix .png, or rename the outputs."),
        (("01-SR.png", "02-SR.png", "sub/03-SR.png"), {"output_suffix": "-SR"},
         "add --output-suffix=-SR."),
    ],
    ids=["suffix", "prefix", "second-extension", "suffix-starting-with-a-dash"],
)  # fmt: skip
def test_a_common_suffix_or_prefix_suggests_the_option_that_maps_it(dirs, outputs, option, words):
    ref, out = dirs
    touch(ref, *REFS)
    touch(out, *outputs)
    hints = pairing_hints(discover_pairs(ref, out))
    assert len(hints) == 1, hints
    assert hints[0].startswith("3 of 3 missing references match extra outputs ")
    assert hints[0].endswith(words.format(out=out, ref=ref)), hints[0]
    followed = discover_pairs(ref, out, **option)
    assert len(followed.pairs) == 3 and pairing_hints(followed) == []


def test_outputs_one_folder_deeper_name_the_output_folder_to_pass(dirs):
    ref, out = dirs
    touch(ref, *REFS)
    touch(out, *(f"x4/{name}" for name in REFS), "x4/readme.png")
    (hint,) = pairing_hints(discover_pairs(ref, out))
    assert hint == (
        f"3 of 3 missing references match extra outputs one folder deeper, under 'x4' "
        f"(e.g. {out / 'x4/01.png'} for {ref / '01.png'}): pass {out / 'x4'} as the output folder."
    )
    assert len(discover_pairs(ref, out / "x4").pairs) == 3


def test_references_one_folder_deeper_name_the_reference_folder_to_pass(dirs):
    ref, out = dirs
    touch(ref, *(f"HR/{name}" for name in REFS))
    touch(out, *REFS)
    (hint,) = pairing_hints(discover_pairs(ref, out))
    assert hint == (
        f"3 of 3 missing references match extra outputs one folder up (the references are under 'HR') "
        f"(e.g. {out / '01.png'} for {ref / 'HR/01.png'}): pass {ref / 'HR'} as the reference folder."
    )
    assert len(discover_pairs(ref / "HR", out).pairs) == 3


def test_nothing_in_common_explains_keys_with_an_example_of_each_side(dirs):
    ref, out = dirs
    touch(ref, "baby.png", "bird.png")
    touch(out, "img_001.png", "img_002.png")
    (hint,) = pairing_hints(discover_pairs(ref, out))
    assert hint == (
        "no output matches a reference: a key is the path relative to its folder without the extension, "
        f"e.g. reference 'baby' ({ref / 'baby.png'}) and output 'img_001' ({out / 'img_001.png'}); "
        "map output names with --output-suffix, --output-template or --output-regex."
    )


def test_an_output_folder_without_images_says_so(dirs):
    ref, out = dirs
    touch(ref, *REFS)
    touch(out, "01.exr", "02.exr", "notes.txt")
    (hint,) = pairing_hints(discover_pairs(ref, out))
    assert hint.startswith("no output image was found for the 3 references: the output folder holds no file ")
    assert ".png" in hint and "check that OUT_DIR is the folder of model outputs" in hint


@pytest.mark.parametrize(
    ("refs", "outputs"),
    [
        (("01.png", "02.png", "03.png", "04.png"), ("01.png", "02.png", "03_SR.png", "04_SR.png")),
        (("01.png", "02.png", "03.png"), ("01.png", "02.png", "03.png")),
        ((), ("01_SR.png",)),
    ],
    ids=["half-paired", "all-paired", "no-reference"],
)
def test_no_hint_when_at_least_half_of_the_references_paired(dirs, refs, outputs):
    ref, out = dirs
    touch(ref, *refs)
    touch(out, *outputs)
    assert pairing_hints(discover_pairs(ref, out)) == []


def test_a_suffix_that_fits_too_few_references_is_not_suggested(dirs):
    ref, out = dirs
    touch(ref, *(f"{i:02d}.png" for i in range(1, 7)))
    touch(out, "06.png", "01_SR.png", "img_a.png", "img_b.png")
    assert pairing_hints(discover_pairs(ref, out)) == []  # 1 pair of 6; '_SR' would pair 1 of the 5 missing
    touch(out, "02_SR.png", "03_SR.png")
    (hint,) = pairing_hints(discover_pairs(ref, out))
    assert hint.startswith("3 of 5 missing references") and hint.endswith("add --output-suffix _SR.")


def test_the_suffix_is_read_from_the_file_name_when_a_wrong_mapping_is_in_use(dirs):
    ref, out = dirs
    touch(ref, "01.png", "02.png")
    touch(out, "01_x4_SR.png", "02_x4_SR.png")
    (hint,) = pairing_hints(discover_pairs(ref, out, output_suffix="_SR"))
    assert hint.endswith("add --output-suffix _x4_SR."), hint
