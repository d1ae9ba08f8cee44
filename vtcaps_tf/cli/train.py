"""`vtcaps train`: its flags are TrainConfig's options (vtcaps_tf/config/train_options.py); it runs
the local launcher (`--local-workers N`), one worker of a multi-worker run (`--multi-worker`) or
keras fit on this machine. Building the parser imports no TensorFlow."""

from __future__ import annotations

import argparse

from vtcaps_tf.config.options import add_arguments, from_args
from vtcaps_tf.config.train_options import TrainConfig

PROG = "vtcaps train"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Train VT-3DCapsNet on the output of `vtcaps preprocess` with keras fit under "
        "MirroredStrategy; checkpoints (every epoch by default), TensorBoard logs, RUN_DIR/model.keras."))
    add_arguments(parser, TrainConfig)
    return parser


def main(argv: list[str]) -> int:
    config = from_args(TrainConfig, build_parser().parse_args(argv), "train")
    if config.local_workers:
        from vtcaps_tf.train import local_cluster

        return local_cluster.launch("vtcaps_tf.cli.main", ["train", *argv], config.local_workers)
    if config.multi_worker:
        from vtcaps_tf.train import multiworker

        try:
            result = multiworker.train(config)
        except multiworker.WorkerFailure as err:
            multiworker.abandon(f"{PROG}: error: {err}")
    else:
        from vtcaps_tf.train import fit

        result = fit.train(config)
    print(f"model: {result.model_path}", flush=True)
    return 0


