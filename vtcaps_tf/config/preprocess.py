"""The options of `vtcaps preprocess`, which are also the keys of a pipeline config's
`example_gen` section: one dataclass, `PreprocessOptions`, from which both derive
(`vtcaps_tf.config.options`), and the settings its defaults and choices name, each defined here
once (the job's modules, `vtcaps_tf.data.clips` and `vtcaps_tf.data.storage` take them from here).

The sizes that depend on the model preset (clip frames, long frames, crop size) and the temporal
policies that depend on the source are None until `resolved()` fills them in: the one place that
decides them. Imports only the standard library and the preset table.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from vtcaps_tf.config.presets import DEFAULT_PRESET
from vtcaps_tf.config.options import OptionError, check, option
from vtcaps_tf.config.presets import PRESETS, get_preset

# Dataset layouts, one module each under pipeline/beam/sources/.
SOURCES = ("folder", "ckplus", "afew", "synthetic")
DEFAULT_SPLIT_RATIOS = (0.7, 0.15, 0.15)  # train, val, test (vtcaps_tf.data.features.SPLITS)
# A worker keeps each frame's JPEG crop and landmarks of the video in hand (a few KB a frame; not
# its decoded frames or crops) and makes the clips one at a time: benchmarks/video_memory.py
# --beam measures it. The limit bounds that, and the time one video holds a worker.
DEFAULT_MAX_FRAMES = 18000
# Runners whose workers are remote: one video, however long, is read and analysed well within this.
DEFAULT_STALL_TIMEOUT_S = 900.0
DEFAULT_STARTUP_TIMEOUT_S = 120.0
# How a sequence shorter than one clip is brought to `clip_frames` frames (vtcaps_tf.data.clips).
# Each map ends on the sequence's last frame (CK+'s peak), so the peak is always inside the clip.
SHORT_POLICIES = ("resample", "pad_first", "loop", "drop")
# Which clips of an onset-to-peak sequence carry its label (CK+ labels the peak frame only).
CLIP_LABELS = ("all", "near_peak")
# 32 dB PSNR on 112 px face crops against 33.7 at quality 95, whose files are 1.36x larger.
DEFAULT_JPEG_QUALITY = 90
# Consecutive clips of a video stored in one record, each frame once (`clips.segment_windows`).
# With M = 2N a record of 8 clips stores 9 / 16 of the frames that 8 one-clip records would.
DEFAULT_CLIPS_PER_RECORD = 8

# Per source: (policy for a sequence shorter than a clip, which clips carry the video's label);
# see vtcaps_tf/data/clips.py and BUILD.md. CK+ sequences run neutral onset -> peak and only the
# peak is labelled: the first frame is repeated in front (real tempo, a longer neutral onset) and
# only clips reaching the last third are labelled. The others hold the expression throughout.
TEMPORAL_DEFAULTS = {
    "ckplus": ("pad_first", "near_peak"),
    "afew": ("resample", "all"),
    "folder": ("resample", "all"),
    "synthetic": ("resample", "all"),
}


def normalized_split_ratios(values) -> tuple[float, ...]:
    """Three non-negative ratios (train, val, test) with a positive train ratio, scaled to sum to
    1. Raises ValueError."""
    values = tuple(float(v) for v in values)
    if len(values) != len(DEFAULT_SPLIT_RATIOS):
        raise ValueError(f"need {len(DEFAULT_SPLIT_RATIOS)} split ratios (train/val/test), got {values}")
    if any(v < 0 or not math.isfinite(v) for v in values) or sum(values) <= 0:
        raise ValueError(f"split ratios must be >= 0 with a positive sum, got {values}")
    if values[0] <= 0:
        raise ValueError("the train ratio of the split ratios must be positive")
    total = sum(values)
    return tuple(v / total for v in values)


def split_ratios_from_text(text: str) -> tuple[float, ...]:
    """"0.7,0.15,0.15", or a list as a config file would print it ("[0.7, 0.15, 0.15]") -> the
    numbers (not yet checked). Raises ValueError."""
    try:
        return tuple(float(v) for v in text.strip().strip("[]()").split(","))
    except ValueError:
        raise ValueError(f"split ratios must be numbers like 0.7,0.15,0.15, got {text!r}") from None


def _ratios_flag(text: str) -> tuple[float, ...]:
    try:
        return split_ratios_from_text(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """Every setting of one preprocessing job (the flags of `vtcaps preprocess`; the keys of the
    pipeline's `example_gen` section, less `output`, which the pipeline decides)."""

    source: str = option(help="dataset layout", choices=SOURCES)
    input: str = option(help="dataset root")
    output: str = option("", help="output directory (shards, metadata.json, ...)", config=False)
    preset: str = option(DEFAULT_PRESET, choices=sorted(PRESETS),
                         help="model preset giving the clip length, TPN window and crop size")
    clip_frames: int | None = option(None, minimum=1, help="N, frames per clip (default: the preset's)")
    long_frames: int | None = option(None, minimum=1,
                                     help="M, frames of the TPN window (default: the preset's)")
    image_size: int | None = option(None, minimum=8,
                                    help="side of the aligned face crop (default: the preset's)")
    split_ratios: tuple[float, ...] = option(DEFAULT_SPLIT_RATIOS, parse=_ratios_flag,
                                             help="train,val,test")
    seed: int = option(42, help="seed of the subject split")
    folds: int = option(0, minimum=0,
                        help="K >= 2: subject-independent K-fold cross-validation instead of "
                             "train/val/test: every subject in one of K folds balanced by clips, "
                             "shards fold00..fold{K-1} (for `vtcaps crossval`)")
    short_policy: str | None = option(
        None, choices=SHORT_POLICIES,
        help="a sequence shorter than a clip: resample (uniform temporal resampling), pad_first "
             "(repeat the first frame), loop, or drop (dead letter too_few_frames); default per "
             "source (ckplus pad_first, others resample)")
    clip_labels: str | None = option(
        None, choices=CLIP_LABELS,
        help="all: every clip carries the video's label; near_peak: only clips reaching the last "
             "third of the sequence (onset-to-peak data such as CK+, whose label describes the "
             "last frame); default per source (ckplus near_peak)")
    jpeg_quality: int = option(DEFAULT_JPEG_QUALITY, minimum=1, help="JPEG quality of stored frames (1-100)")
    clips_per_record: int = option(
        DEFAULT_CLIPS_PER_RECORD, minimum=1,
        help="consecutive clips of a video stored in one record, which holds each of their frames "
             f"once (default {DEFAULT_CLIPS_PER_RECORD}; 1: one clip per record)")
    max_frames: int = option(DEFAULT_MAX_FRAMES, minimum=1,
                             help="a longer video is a too_long dead letter (a worker keeps every "
                                  f"frame's crop; default {DEFAULT_MAX_FRAMES})")
    no_progress: bool = option(False, help="no progress lines on stderr")
    stall_timeout: float = option(
        DEFAULT_STALL_TIMEOUT_S, minimum=0.0, metavar="S",
        help="runners whose workers are remote (PortableRunner, Flink, Spark, Dataflow): cancel "
             "the job when no video finished for S seconds (workers that never started or hang; "
             f"default {DEFAULT_STALL_TIMEOUT_S:.0f}, 0: wait)")
    startup_timeout: float = option(
        DEFAULT_STARTUP_TIMEOUT_S, minimum=0.0, metavar="S",
        help="runners whose workers are remote: cancel the job when no worker began work in S "
             f"seconds (workers that cannot start; default {DEFAULT_STARTUP_TIMEOUT_S:.0f}, 0: "
             "only --stall-timeout applies)")

    def __post_init__(self):
        # Checks across fields and ranges the per-field rules do not express; ValueError, which
        # `from_args` / `from_mapping` report as a usage error.
        normalized_split_ratios(self.split_ratios)
        if self.jpeg_quality > 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.folds == 1:
            raise ValueError("folds must be at least 2 (or 0: train/val/test), got 1")
        if self.clip_frames and self.long_frames and self.long_frames < self.clip_frames:
            raise ValueError(f"need clip_frames <= long_frames, got {self.clip_frames}, {self.long_frames}")


def resolved(options: PreprocessOptions) -> PreprocessOptions:
    """`options` with what was left to the preset and the source filled in: clip frames, long
    frames (at least the clip's) and crop size from the preset; the short-sequence policy and the
    clip labelling from the source (TEMPORAL_DEFAULTS); the split ratios scaled to sum to 1.
    Raises OptionError (a usage error) for a value of the wrong type or range (options built in
    Python are not checked otherwise) or a result that does not fit together."""
    check(options, "preprocess")
    preset = get_preset(options.preset)
    clip_frames = options.clip_frames or preset.clip_frames
    long_frames = options.long_frames or max(preset.long_frames, clip_frames)
    if long_frames < clip_frames:
        raise OptionError(f"need clip_frames <= long_frames, got {clip_frames}, {long_frames} "
                          f"(the {options.preset} preset gives the one not set)")
    short_policy, clip_labels = TEMPORAL_DEFAULTS[options.source]
    return dataclasses.replace(
        options, clip_frames=clip_frames, long_frames=long_frames,
        image_size=options.image_size or preset.image_size,
        split_ratios=normalized_split_ratios(options.split_ratios),
        short_policy=options.short_policy or short_policy,
        clip_labels=options.clip_labels or clip_labels)
