"""`vtcaps crossval`: its flags are CrossvalOptions' options (vtcaps_tf/config/train_options.py);
it runs the local launcher (`--local-workers N`), one worker of a multi-worker cross-validation
(`--multi-worker`) or the folds on this machine. Building the parser imports no TensorFlow."""

from __future__ import annotations

import argparse
import os
import sys

from vtcaps_tf.config.options import add_arguments, from_args
from vtcaps_tf.config.train_options import CrossvalOptions

PROG = "vtcaps crossval"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Subject-independent K-fold cross-validation on the output of `vtcaps preprocess --folds K`: "
        "one model per fold (test = that fold, validation = the next fold's subjects), clip- and "
        "video-level reports per fold, OUT/report.json and report.md (mean ± std over folds). "
        "A rerun skips finished folds and resumes the one that was interrupted."))
    add_arguments(parser, CrossvalOptions)
    return parser


def main(argv: list[str]) -> int:
    options = from_args(CrossvalOptions, build_parser().parse_args(argv), "crossval")
    if options.local_workers:
        from vtcaps_tf.train import local_cluster

        return local_cluster.launch("vtcaps_tf.cli.main", ["crossval", *argv], options.local_workers)
    from vtcaps_tf.train import crossval, multiworker

    # The strategy first: it starts the worker's server before anything else runs.
    strategy = multiworker.start(options.collective_timeout) if options.multi_worker else None
    try:
        summary = crossval.crossval(options, log=lambda msg: print(msg, file=sys.stderr, flush=True),
                                    strategy=strategy)
    except multiworker.WorkerFailure as err:
        multiworker.abandon(f"{PROG}: error: {err}")
    m, s = summary["mean"], summary["std"]
    print(f"clip accuracy {100 * m['clip_accuracy']:.2f} ± {100 * s['clip_accuracy']:.2f}%, "
          f"video accuracy {100 * m['video_accuracy']:.2f} ± {100 * s['video_accuracy']:.2f}% "
          f"over {len(summary['folds'])} folds ({summary['num_videos']} videos)")
    print(os.path.join(options.output, "report.json"))
    return 0


