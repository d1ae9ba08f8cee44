"""`vtcaps evaluate`: the parser of `vtcaps_tf.evaluation.evaluate` and its `evaluate_model`."""

from __future__ import annotations

import argparse
import os

from vtcaps_tf.errors import InputNotFoundError, UsageError


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_tf.evaluation import evaluate

    return evaluate.build_parser()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_tf.data.features import SchemaError
    from vtcaps_tf.evaluation import evaluate

    if not os.path.isdir(args.data):
        raise InputNotFoundError(f"no data directory {args.data!r}")
    try:
        report, paths = evaluate.evaluate_model(args.model, args.data, args.split, args.output,
                                                args.batch_size, verbose=1)
    except SchemaError as err:  # data this version cannot read: bad input
        raise UsageError(str(err)) from err
    print(f"accuracy {100 * report['accuracy']:.2f}%  UAR {100 * report['uar']:.2f}%  "
          f"macro F1 {100 * report['macro_f1']:.2f}%  ({report['num_samples']} clips)")
    v = report["video"]
    print(f"video level: accuracy {100 * v['accuracy']:.2f}%  UAR {100 * v['uar']:.2f}%  "
          f"macro F1 {100 * v['macro_f1']:.2f}%  ({report['num_videos']} videos)")
    for path in paths.values():
        print(path)
    return 0
