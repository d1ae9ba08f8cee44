"""`vtcaps evaluate`: the flags of `EvaluateOptions` (vtcaps_tf.config.evaluate); `main` loads
TensorFlow and the model through `vtcaps_tf.evaluation.evaluate.evaluate_model`."""

from __future__ import annotations

import argparse

from vtcaps_tf.config.evaluate import EvaluateOptions
from vtcaps_tf.config.options import add_arguments, from_args
from vtcaps_tf.errors import EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtcaps evaluate", description=(
        "Evaluate a trained model on one split: accuracy, per-class P/R/F1, UAR/WAR, confusion "
        "matrix -> report.json, report.md, confusion_matrix.png"))
    add_arguments(parser, EvaluateOptions)
    return parser


def main(argv: list[str]) -> int:
    options = from_args(EvaluateOptions, build_parser().parse_args(argv))
    from vtcaps_tf.evaluation.evaluate import evaluate_model

    report, paths = evaluate_model(options.model, options.data, options.split, options.output,
                                   options.batch_size, verbose=1,
                                   skip_corrupt_records=options.skip_corrupt_records)
    print(f"accuracy {100 * report['accuracy']:.2f}%  UAR {100 * report['uar']:.2f}%  "
          f"macro F1 {100 * report['macro_f1']:.2f}%  ({report['num_samples']} clips)")
    v = report["video"]
    print(f"video level: accuracy {100 * v['accuracy']:.2f}%  UAR {100 * v['uar']:.2f}%  "
          f"macro F1 {100 * v['macro_f1']:.2f}%  ({report['num_videos']} videos)")
    for path in paths.values():
        print(path)
    return EXIT_OK


