"""Issue 7: fuzz the worker path with random and mutated bytes as the output of a pair.

Whatever the bytes, `score_shard` returns exactly one row: ok, or an error naming the output file. It never
raises and never hangs (the images are small, so each example takes milliseconds).
"""

from __future__ import annotations

import io

import pytest
from conftest import real_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.worker import PairTask, ShardSettings, score_shard

SETTINGS = ShardSettings(metrics=("psnr", "ssim"))
REFERENCE = real_image("astronaut.png")[:32, :32]


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(REFERENCE).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


SEEDS = {"png": encoded("PNG"), "jpg": encoded("JPEG")}


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    """A real PNG or JPEG with bytes flipped, deleted, inserted or the file cut short."""
    extension = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[extension])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(("flip", "delete", "insert", "truncate")))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if not data:
            break
        if kind == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[position:]
    return extension, bytes(data)


def score_output_bytes(folder, extension: str, data: bytes) -> dict:
    reference = folder / "ref.png"
    if not reference.exists():
        Image.fromarray(REFERENCE).save(reference)
    output = folder / f"fuzzed output.{extension}"
    output.write_bytes(data)
    task = PairTask("fuzz", "", str(reference), str(output))
    rows = score_shard([task], SETTINGS).rows
    assert len(rows) == 1
    return rows[0]


def check_row(row: dict) -> None:
    assert row.status in ("ok", "error")
    if row.status == "error":
        assert "fuzzed output" in row.error, row.error
        assert "Traceback" not in row.error
        assert "Unexpected failure" not in row.error, row.error
    else:
        assert row.psnr is not None and row.height == 32


FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


@FUZZ
@given(extension=st.sampled_from(("png", "jpg", "bmp", "tif", "webp", "npy")), data=st.binary(max_size=2048))
def test_random_bytes_give_one_row(tmp_path, extension, data):
    row = score_output_bytes(tmp_path, extension, data)
    check_row(row)
    assert row.status == "error" or data.startswith((b"\x89PNG", b"\xff\xd8", b"BM", b"II", b"MM", b"RIFF"))


@FUZZ
@given(case=mutated())
def test_mutated_images_give_one_row(tmp_path, case):
    extension, data = case
    check_row(score_output_bytes(tmp_path, extension, data))


@pytest.mark.parametrize("extension", sorted(SEEDS))
def test_unmutated_seeds_score_ok(tmp_path, extension):
    row = score_output_bytes(tmp_path, extension, SEEDS[extension])
    assert row.status == "ok", row.error


@pytest.mark.parametrize(
    "data",
    [
        b"\x93NUMPY\x01\x00" + b"\xff" * 40,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        b"\xff\xd8\xff\xe0" + b"\x00" * 100,
        b"II*\x00" + b"\xff" * 100,
        b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 50,
    ],
    ids=["npy", "png", "jpeg", "tiff", "webp"],
)
def test_magic_bytes_with_garbage_are_error_rows(tmp_path, data):
    row = score_output_bytes(tmp_path, "png", data)
    assert row.status == "error" and "fuzzed output.png" in row.error
    assert "Unexpected failure" not in row.error, row.error
