"""The options of `vtcaps preprocess`, apart from the Beam job so that `vtcaps preprocess --help`
and its flag errors are answered without Beam or TensorFlow (vtcaps_tf.cli.main imports only this).

Imports the standard library, numpy (through the clip policies) and `vtcaps_tf.config.flags`. The
settings the parser shows as defaults or choices are defined here, once; the job's modules take
them from here.
"""

from __future__ import annotations

import argparse

from vtcaps_pipeline.beam.job_watch import DEFAULT_STALL_TIMEOUT_S
from vtcaps_tf.config import flags as cli_parsers
from vtcaps_tf.data import storage
from vtcaps_tf.data.clips import CLIP_LABELS, SHORT_POLICIES

# Dataset layouts, one module each under pipeline/sources/ (which would import TensorFlow).
SOURCES = ("folder", "ckplus", "afew", "synthetic")
DEFAULT_RATIOS = "0.7,0.15,0.15"
# A worker keeps each frame's JPEG crop and landmarks of the video in hand (a few KB a frame; not
# its decoded frames or crops) and makes the clips one at a time: benchmarks/video_memory.py
# --beam measures it. The limit bounds that, and the time one video holds a worker.
DEFAULT_MAX_FRAMES = 18000


def build_parser() -> argparse.ArgumentParser:
    """The job's own flags; anything else on the command line goes to Beam (parse_known_args)."""
    p = argparse.ArgumentParser(
        prog="vtcaps preprocess",
        description="Beam job: face videos -> aligned face clips + landmarks -> TFRecords split by "
                    "subject. Unknown flags go to Beam (--runner, --direct_num_workers, ...).")
    p.add_argument("--source", required=True, choices=SOURCES, help="dataset layout")
    p.add_argument("--input", required=True, help="dataset root")
    p.add_argument("--output", required=True, help="output directory (shards, metadata.json, ...)")
    p.add_argument("--preset", default=cli_parsers.DEFAULT_PRESET, choices=cli_parsers.preset_names(),
                   help="model preset giving the clip length, TPN window and crop size "
                        f"(default {cli_parsers.DEFAULT_PRESET})")
    p.add_argument("--clip-frames", type=int, help="N, frames per clip (default: the preset's)")
    p.add_argument("--long-frames", type=int, help="M, frames of the TPN window (default: the preset's)")
    p.add_argument("--image-size", type=int, help="side of the aligned face crop (default: the preset's)")
    p.add_argument("--split-ratios", default=DEFAULT_RATIOS, help=f"train,val,test (default {DEFAULT_RATIOS})")
    p.add_argument("--seed", type=int, default=42, help="seed of the subject split (default 42)")
    p.add_argument("--folds", type=int, default=0,
                   help="K >= 2: subject-independent K-fold cross-validation instead of "
                        "train/val/test: every subject in one of K folds balanced by clips, "
                        "shards fold00..fold{K-1} (for `vtcaps crossval`)")
    p.add_argument("--short-policy", choices=SHORT_POLICIES, default=None,
                   help="a sequence shorter than a clip: resample (uniform temporal resampling), "
                        "pad_first (repeat the first frame), loop, or drop (dead letter "
                        "too_few_frames); default per source (ckplus pad_first, others resample)")
    p.add_argument("--clip-labels", choices=CLIP_LABELS, default=None,
                   help="all: every clip carries the video's label; near_peak: only clips reaching "
                        "the last third of the sequence (onset-to-peak data such as CK+, whose "
                        "label describes the last frame); default per source (ckplus near_peak)")
    p.add_argument("--jpeg-quality", type=int, default=storage.DEFAULT_JPEG_QUALITY,
                   help=f"JPEG quality of stored frames (default {storage.DEFAULT_JPEG_QUALITY})")
    p.add_argument("--clips-per-record", type=int, default=storage.DEFAULT_CLIPS_PER_RECORD,
                   help="consecutive clips of a video stored in one record, which holds each of "
                        "their frames once (default "
                        f"{storage.DEFAULT_CLIPS_PER_RECORD}; 1: one clip per record)")
    p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                   help="a longer video is a too_long dead letter (a worker keeps every frame's crop; "
                        f"default {DEFAULT_MAX_FRAMES})")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_TIMEOUT_S,
                   metavar="S", help="runners whose workers are remote (PortableRunner, Flink, Spark, "
                   "Dataflow): cancel the job when no video finished for S seconds (workers that "
                   f"never started or hang; default {DEFAULT_STALL_TIMEOUT_S:.0f}, 0: wait)")
    return p
