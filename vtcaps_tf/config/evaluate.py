"""The options of `vtcaps evaluate` (`EvaluateOptions`) and of the pipeline's `evaluate` section
(`EvaluateStepOptions`): flags and config keys derive from these dataclasses
(vtcaps_tf.config.options), and the split both evaluate is one definition (`split_option`).
Imports only the standard library."""

from __future__ import annotations

import dataclasses

from vtcaps_tf.config.options import option

LEVELS = ("clip", "video")  # what the pipeline's blessing judges: clip or video accuracy


def split_option():
    """The split evaluated: `vtcaps evaluate --split` and the pipeline's `evaluate.split`."""
    return option("test", help="train, val, test, or a fold (fold00, ...) of a --folds output")


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
    """`vtcaps evaluate`: a trained model on one split of a preprocessed data set."""

    model: str = option(help="RUN_DIR/model.keras")
    data: str = option(help="output directory of `vtcaps preprocess`")
    output: str = option(help="directory for the report files")
    split: str = split_option()
    batch_size: int = option(16, minimum=1, help="clips per batch")
    skip_corrupt_records: bool = option(
        False, help="evaluate without a corrupt or truncated shard's unreadable rest (counted in "
                    "the report) rather than stop naming it")


@dataclasses.dataclass(frozen=True)
class EvaluateStepOptions:
    """The pipeline's Evaluate step: the trained model on one split, and the accuracy at which it
    is blessed (pushed)."""

    split: str = split_option()
    accuracy_threshold: float = option(0.0, minimum=0.0,
                                       help="bless the model when its accuracy reaches this (0..1)")
    level: str = option("clip", choices=LEVELS,
                        help="the accuracy judged: clip by clip, or video by video")
