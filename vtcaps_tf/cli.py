"""The `vtcaps` command: one subcommand per stage, each implemented in its own module.

Subcommand modules are imported only when that subcommand runs, so `vtcaps --help` is instant and
a missing optional piece never breaks the others. Each module exposes `cli_main(argv) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module holding cli_main, one-line help)
SUBCOMMANDS = {
    "synth": ("pipeline.synth", "generate a synthetic expression video set (folder layout + manifest)"),
    "preprocess": ("pipeline.preprocess", "Beam job: face videos -> aligned clips + landmarks -> TFRecords"),
    "train": ("vtcaps_tf.training", "train VT-3DCapsNet with keras fit under MirroredStrategy"),
    "evaluate": ("vtcaps_tf.evaluate", "accuracy, per-class P/R/F1, UAR/WAR, confusion matrix"),
    "crossval": ("vtcaps_tf.crossval", "subject-independent K-fold cross-validation, one model per fold"),
    "export": ("vtcaps_tf.export", "write a versioned SavedModel for TensorFlow Serving"),
    "serve": ("vtcaps_tf.serving.server", "serve SavedModels over TF Serving's REST and gRPC APIs"),
    "predict": ("vtcaps_tf.serving.predict", "say which emotion each face of a video or photo shows, clip by clip"),
    "stream": ("vtcaps_tf.serving.stream", "emotions of every face in a camera, file or URL stream, as they come"),
    "profile": ("vtcaps_tf.models.profile", "parameters and FLOPs per clip of a preset"),
    "pipeline": ("pipeline.runner", "run the TFX-style chain ExampleGen -> ... -> Push from a config"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtcaps",
        description="VT-3DCapsNet: video facial-expression recognition, from videos to a served model.",
        epilog="Run `vtcaps COMMAND --help` for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    module_name, _ = SUBCOMMANDS[name]
    # TensorFlow's C++ start-up chatter (INFO/WARNING) hides the command's own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            print(f"usage: vtcaps {name} ...\nvtcaps {name}: not available in this installation "
                  f"({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    return int(module.cli_main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
