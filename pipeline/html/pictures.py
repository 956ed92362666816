"""Pictures of a pair for the report: 1:1 crops of the regions where it is worst, and its whole pictures.

Every picture is a lossless PNG data URI: photos in 8 bits per channel (16-bit and float images scaled to 8
bits), maps through a 256-colour palette. Crops are `CROP_SIDE` x `CROP_SIDE` windows chosen by
`pipeline.html.regions` (the page enlarges them with nearest neighbour). Whole pictures (reference, baseline
output, output, |error| map, SSIM map) are shown small in the pair's card and full size when clicked.

The page holds at most `PICTURE_BUDGET` characters of pictures: `PictureBudget` shares out what is left
among the pairs still to come. A pair spends its share on its crops first, then on its whole pictures: at
their own size (at most `FULL_SIDE` px on the long side) when they fit, else downscaled to the largest side
whose worst case (incompressible pixels, `png_uri_bound`) fits. What does not fit becomes a placeholder that
says so, and so does any picture that cannot be made (an unreadable file, one changed since its run).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pipeline.align import AlignedPair
from pipeline.html.display import (
    ERROR_COLORMAP,
    SSIM_COLORMAP,
    ReadOptions,
    aligned_or_reason,
    data_uri,
    error_map,
    error_scale,
    map_levels,
    palette,
    read_or_reason,
    short_reason,
    to_uint8,
)
from pipeline.html.regions import (
    CROP_SIDE,
    RegionKind,
    Window,
    dissimilarity,
    full_size,
    local_ssim,
    squared_error,
    worst_window,
)
from pipeline.metrics.ssim import WINDOW_SIZE

PICTURE_BUDGET = 32 * 2**20  # characters of picture data URIs on one page
FULL_SIDE = 1024  # longest side of a whole picture, in pixels
CROP_ZOOM = 3  # screen pixels per image pixel of a crop, enlarged with nearest neighbour
MIN_WHOLE_SIDE = 32  # a whole picture smaller than this is left out rather than shown
PNG_PREFIX = "data:image/png;base64,"
PNG_OVERHEAD = 2048  # signature, header, palette, end chunk and slack, in bytes
OVER_BUDGET = "over the page's picture budget"
SAME_REGION = 0.5  # windows sharing at least this part of their area are shown as one region

SLOTS = {
    "reference": "reference",
    "baseline": "baseline output",
    "output": "output",
    "error": "|error|",
    "ssim": "SSIM map",
}
REGION_TITLES = {
    (RegionKind.ERROR, False): "highest local squared error",
    (RegionKind.STRUCTURE, False): "lowest local SSIM",
    (RegionKind.ERROR, True): "largest growth of the local squared error against the baseline",
    (RegionKind.STRUCTURE, True): "largest drop of local SSIM against the baseline",
}


@dataclass
class Picture:
    """One picture of a pair, or the reason it is missing.

    Attributes:
        slot: What it shows, one of `SLOTS` (also the last part of its anchor in the page).
        data_uri: `data:image/png;base64,...`, or None when there is no picture.
        note: The colour scale of a map, or the reason for a missing picture.
        width, height: Its size in pixels.
        full_width, full_height: The size of what it shows before downscaling (equal when not downscaled).
    """

    slot: str
    data_uri: str | None
    note: str = ""
    width: int = 0
    height: int = 0
    full_width: int = 0
    full_height: int = 0

    @property
    def label(self) -> str:
        return SLOTS[self.slot]

    @property
    def downscaled(self) -> bool:
        return (self.width, self.height) != (self.full_width, self.full_height)


@dataclass
class Region:
    """A window of a pair shown as 1:1 crops: reference, baseline output, output and the map that chose it."""

    title: str
    metrics: list[str]
    window: Window
    crops: list[Picture]


@dataclass
class PairPictures:
    """Everything shown of one pair: its whole pictures and the regions where it is worst.

    `height` and `width` are those of the aligned pair (0 when it could not be aligned); `size` is the number
    of characters its data URIs take.
    """

    wholes: list[Picture]
    regions: list[Region] = field(default_factory=list)
    height: int = 0
    width: int = 0
    size: int = 0


@dataclass(frozen=True)
class PairFiles:
    """A pair's files and the hashes their runs recorded (None: not checked).

    `baseline_out` is None without a baseline, or when the baseline has no row for the key.
    """

    ref_path: str
    out_path: str
    ref_sha256: str | None = None
    out_sha256: str | None = None
    baseline_out: str | None = None
    baseline_sha256: str | None = None


@dataclass(frozen=True)
class RegionRequest:
    """A region to show: the worst window of a map (against the baseline: where it got most worse), for the
    metrics listed."""

    kind: RegionKind
    against_baseline: bool
    metrics: tuple[str, ...]


class PictureBudget:
    """Characters of pictures the page may still hold, shared out evenly among the pairs still to come."""

    def __init__(self, total: int, pairs: int) -> None:
        self.left = total
        self.pairs_left = pairs

    def share(self) -> int:
        """The allowance of the next pair."""
        return self.left // max(1, self.pairs_left)

    def spend(self, used: int) -> None:
        """Record what the pair just made used; what it left over goes to the pairs after it."""
        assert used <= self.left, (used, self.left)
        self.left -= used
        self.pairs_left -= 1


# Encoding


def png_uri(image: Image.Image) -> str:
    """A PIL image -> PNG data URI (lossless)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return data_uri(buffer.getvalue(), "image/png")


def png_uri_bound(height: int, width: int, channels: int) -> int:
    """The most characters a PNG data URI of an image of this size can take (incompressible pixels).

    Deflate stores what it cannot compress at a few bytes per 64 KiB, PNG adds a filter byte per row and
    a chunk header per block; `raw // 1000` and `PNG_OVERHEAD` cover both with room to spare.

    Example:
        >>> png_uri_bound(96, 96, 3)
        39782
    """
    raw = height * (width * channels + 1)
    stored = raw + raw // 1000 + PNG_OVERHEAD
    return len(PNG_PREFIX) + 4 * -(-stored // 3)


def scaled_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(height, width) scaled down to at most `side` px on the long side (never up)."""
    scale = side / max(height, width, 1)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass
class Source:
    """What a whole picture shows, at full resolution, before it is encoded at some size (or cropped)."""

    slot: str
    image: Image.Image  # 'L' or 'RGB' photo, or 'L' levels of a map
    colours: list[int] | None = None  # the palette of a map
    note: str = ""

    @property
    def channels(self) -> int:
        return 3 if self.image.mode == "RGB" else 1

    def bound(self, side: int) -> int:
        height, width = scaled_size(self.image.height, self.image.width, side)
        return png_uri_bound(height, width, self.channels)

    def picture(self, side: int) -> Picture:
        """Encoded at most `side` px on the long side: photos resampled with Lanczos, maps area-averaged."""
        image = self.image
        height, width = scaled_size(image.height, image.width, side)
        if (height, width) != (image.height, image.width):
            resample = Image.Resampling.BOX if self.colours else Image.Resampling.LANCZOS
            image = image.resize((width, height), resample, reducing_gap=None if self.colours else 2.0)
        if self.colours:
            image = image.copy()
            image.putpalette(self.colours)
        return Picture(
            self.slot, png_uri(image), self.note, width, height, self.image.width, self.image.height
        )


def fitting_side(sources: list[Source], allowance: int, cap: int = FULL_SIDE) -> int:
    """The largest long side <= `cap` at which the worst case of every source together fits `allowance`;
    0 when not even `MIN_WHOLE_SIDE` does."""
    if sum(source.bound(MIN_WHOLE_SIDE) for source in sources) > allowance:
        return 0
    low, high = MIN_WHOLE_SIDE, cap
    while low < high:
        middle = (low + high + 1) // 2
        if sum(source.bound(middle) for source in sources) <= allowance:
            low = middle
        else:
            high = middle - 1
    return low


def placeholder(slot: str, reason: str) -> Picture:
    """A missing picture and why."""
    return Picture(slot, None, f"no picture: {reason}")


def _size(pictures: list[Picture]) -> int:
    return sum(len(p.data_uri) for p in pictures if p.data_uri)


def whole_pictures(sources: list[Source], allowance: int) -> list[Picture]:
    """Whole pictures at their own size (capped at `FULL_SIDE`) when they fit `allowance` characters, else
    at the largest side whose worst case fits; placeholders when none does."""
    pictures = [source.picture(FULL_SIDE) for source in sources]
    if _size(pictures) <= allowance:
        return pictures
    side = fitting_side(sources, allowance)
    if not side:
        return [placeholder(source.slot, OVER_BUDGET) for source in sources]
    return [source.picture(side) for source in sources]


# One pair


@dataclass
class _Output:
    """An output aligned to the reference, with the maps its regions are chosen on."""

    pair: AlignedPair

    @functools.cached_property
    def ssim(self) -> np.ndarray | None:
        """The 'valid' SSIM map; None when a side is under 11 px."""
        return local_ssim(self.pair.ref, self.pair.out, self.pair.data_range)

    def badness(self, kind: RegionKind) -> np.ndarray:
        """Higher is worse: 1 - local SSIM (structure), or the squared error."""
        if kind == RegionKind.STRUCTURE and self.ssim is not None:
            return dissimilarity(self.ssim)
        return squared_error(self.pair.ref, self.pair.out)

    def kind(self, kind: RegionKind) -> RegionKind:
        """The kind of map `badness(kind)` really is."""
        return kind if min(self.pair.ref.shape[:2]) >= WINDOW_SIZE else RegionKind.ERROR


def _photo(slot: str, pair: AlignedPair, pixels: np.ndarray) -> Source:
    return Source(slot, Image.fromarray(to_uint8(pixels, pair.data_range)))


def _map_source(slot: str, levels: np.ndarray, colormap: str, note: str) -> Source:
    return Source(slot, Image.fromarray(levels), palette(colormap), note)


def _map_sources(candidate: _Output, top: float) -> list[Source]:
    """|error| (0 to `top`, inferno) and SSIM map (0 to 1, viridis) of the candidate."""
    pair = candidate.pair
    sources = [
        _map_source(
            "error",
            map_levels(error_map(pair), 0.0, top),
            ERROR_COLORMAP,
            f"0 (dark) to {top:.3g} (bright), data units",
        )
    ]
    if candidate.ssim is not None:
        levels = map_levels(full_size(candidate.ssim), 0.0, 1.0)
        note = "0 (dark) to 1 (bright); the 5 px edge repeats its neighbours"
        sources.append(_map_source("ssim", levels, SSIM_COLORMAP, note))
    return sources


def _window(
    request: RegionRequest, candidate: _Output, baseline: _Output | None, border: int
) -> tuple[RegionKind, bool, Window]:
    """Where the candidate is worst on the request's map, or (against a baseline) got most worse."""
    kind = candidate.kind(request.kind)
    against = request.against_baseline and baseline is not None and baseline.kind(kind) == kind
    badness = candidate.badness(kind)
    if against:
        badness = badness - baseline.badness(kind)
    return kind, against, worst_window(badness, CROP_SIDE, border)


@dataclass
class _Found:
    """A window found for one or more requests."""

    window: Window
    kind: RegionKind
    titles: list[str]
    metrics: list[str]

    def add(self, title: str, metrics: tuple[str, ...]) -> None:
        self.titles.extend([title] if title not in self.titles else [])
        self.metrics.extend(m for m in metrics if m not in self.metrics)


def _regions(
    requests: list[RegionRequest], candidate: _Output, baseline: _Output | None, border: int
) -> list[_Found]:
    """The window of each requested region; a window that mostly overlaps one found before (`SAME_REGION`)
    is shown as that one, its title and metrics added."""
    found: list[_Found] = []
    for request in requests:
        kind, against, window = _window(request, candidate, baseline, border)
        same = next((f for f in found if f.window.overlap(window) >= SAME_REGION), None)
        if same is None:
            same = _Found(window, kind, [], [])
            found.append(same)
        same.add(REGION_TITLES[(kind, against)], request.metrics)
    return found


def _crop(source: Source, window: Window) -> Picture:
    """A 1:1 crop of a whole picture's source (a map keeps its palette)."""
    box = (window.left, window.top, window.left + window.width, window.top + window.height)
    cropped = Source(source.slot, source.image.crop(box), source.colours, source.note)
    return cropped.picture(max(window.height, window.width))


def _region_crops(sources: dict[str, Source], kind: RegionKind, window: Window) -> list[Picture]:
    """Reference, baseline output, output and the map that chose the window, cropped to it."""
    slots = ["reference", "baseline", "output", "ssim" if kind == RegionKind.STRUCTURE else "error"]
    return [_crop(sources[slot], window) for slot in slots if slot in sources]


def _same_shape(baseline: AlignedPair | str | None, candidate: AlignedPair) -> AlignedPair | str | None:
    """The baseline pair, or why it cannot be shown next to the candidate (another shape once aligned)."""
    if isinstance(baseline, AlignedPair) and baseline.ref.shape != candidate.ref.shape:
        return f"aligned to the reference it is {baseline.ref.shape}, the output {candidate.ref.shape}"
    return baseline


def _sources(
    candidate: _Output, baseline: AlignedPair | str | None
) -> tuple[dict[str, Source], list[Picture]]:
    """The whole pictures to show by slot, and placeholders for those that cannot be made."""
    pair = candidate.pair
    errors = [error_map(pair)] + ([error_map(baseline)] if isinstance(baseline, AlignedPair) else [])
    top = max(error_scale(e, pair.data_range) for e in errors)
    sources = [
        _photo("reference", pair, pair.ref),
        _photo("output", pair, pair.out),
        *_map_sources(candidate, top),
    ]
    missing = []
    if isinstance(baseline, AlignedPair):
        sources.insert(1, _photo("baseline", baseline, baseline.out))
    elif isinstance(baseline, str):
        missing.append(placeholder("baseline", baseline))
    if candidate.ssim is None:
        height, width = pair.ref.shape[:2]
        missing.append(
            placeholder("ssim", f"image is {width}x{height}, smaller than the {WINDOW_SIZE} px window")
        )
    return {source.slot: source for source in sources}, missing


def _in_order(pictures: list[Picture]) -> list[Picture]:
    """Pictures in the order of `SLOTS`."""
    return sorted(pictures, key=lambda picture: list(SLOTS).index(picture.slot))


def _aligned_pictures(
    candidate_pair: AlignedPair,
    baseline_pair: AlignedPair | str | None,
    requests: list[RegionRequest],
    options: ReadOptions,
    allowance: int,
) -> PairPictures:
    """Crops and whole pictures of a pair whose output (and maybe baseline output) could be aligned."""
    baseline_pair = _same_shape(baseline_pair, candidate_pair)
    candidate = _Output(candidate_pair)
    baseline = _Output(baseline_pair) if isinstance(baseline_pair, AlignedPair) else None
    sources, missing = _sources(candidate, baseline_pair)
    regions = [
        Region(" · ".join(f.titles), f.metrics, f.window, _region_crops(sources, f.kind, f.window))
        for f in _regions(requests, candidate, baseline, options.border)
    ]
    crop_size = sum(_size(region.crops) for region in regions)
    if crop_size > allowance:
        for region in regions:
            region.crops = [placeholder(crop.slot, OVER_BUDGET) for crop in region.crops]
        crop_size = 0
    wholes = _in_order(whole_pictures(list(sources.values()), allowance - crop_size) + missing)
    height, width = candidate_pair.ref.shape[:2]
    return PairPictures(wholes, regions, height, width, crop_size + _size(wholes))


def _unavailable(files: PairFiles, reason: str, shown: list[Picture] | None = None) -> PairPictures:
    """Placeholders for every picture that is not in `shown`."""
    shown = shown or []
    slots = ["reference", *(["baseline"] if files.baseline_out else []), "output", "error", "ssim"]
    done = {picture.slot: picture for picture in shown}
    wholes = [done.get(slot) or placeholder(slot, reason) for slot in slots]
    return PairPictures(wholes, size=_size(wholes))


def pair_pictures(
    files: PairFiles, requests: list[RegionRequest], options: ReadOptions, allowance: int
) -> PairPictures:
    """Crops of the requested regions and whole pictures of a pair, within `allowance` characters.

    Args:
        files: The pair's files and recorded hashes; a file that no longer hashes to its recorded value
            gets a placeholder, and so does everything made from it.
        requests: The regions to show (regions that land on one window are shown once).
        options: How the run read its files; `options.border` keeps windows out of the convention's crop.
        allowance: Characters of data URIs this pair may use.

    Returns:
        The pictures; any that cannot be made carry a placeholder note instead. Never raises.
    """
    try:
        if not files.ref_path or not files.out_path:
            return _unavailable(files, "no file path in the results")
        reference = read_or_reason(files.ref_path, options, files.ref_sha256)
        if isinstance(reference, str):
            return _unavailable(files, reference)
        candidate = aligned_or_reason(reference, files.out_path, options, files.out_sha256)
        if isinstance(candidate, str):
            source = Source("reference", Image.fromarray(to_uint8(reference.pixels, reference.data_range)))
            return _unavailable(files, candidate, whole_pictures([source], allowance))
        baseline = (
            aligned_or_reason(reference, files.baseline_out, options, files.baseline_sha256)
            if files.baseline_out
            else None
        )
        return _aligned_pictures(candidate, baseline, requests, options, allowance)
    except Exception as exc:
        return _unavailable(files, short_reason(exc))
