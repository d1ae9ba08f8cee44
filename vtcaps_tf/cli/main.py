"""The `vtcaps` command: one subcommand per stage, each in its own module `vtcaps_tf.cli.<name>`.

A command module exposes `build_parser() -> argparse.ArgumentParser`, which imports no
TensorFlow, Beam, MediaPipe or OpenCV, and `main(argv) -> int`, which imports the library it
runs. The dispatcher parses the arguments with `build_parser()` first, so `--help` and flag errors
are answered before anything heavy loads, then calls `main(argv)`.

Unless `vtcaps --verbose ...` is given, TensorFlow's start-up chatter is kept off stderr
(`tensorflow_setup`). Exit statuses: `vtcaps_tf.errors.EXIT_STATUSES`; a `UsageError` becomes 2
and any other exception 1, each with one line (`--verbose` adds the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import traceback

from vtcaps_tf.cli.tensorflow_setup import quiet_tensorflow, tensorflow_defaults
from vtcaps_tf.errors import (EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_PREEMPTED, EXIT_USAGE,
                              PreemptedError, UsageError, exit_status_table)


@dataclasses.dataclass(frozen=True)
class Command:
    help: str  # one line, for `vtcaps --help`
    # Check only the flags the parser knows and leave the rest to the command (preprocess hands
    # unknown flags to Beam, which tells a bad one).
    known_args_only: bool = False


COMMANDS = {
    "synth": Command("generate a synthetic expression video set (folder layout + manifest)"),
    "preprocess": Command("Beam job: face videos -> aligned clips + landmarks -> TFRecords",
                          known_args_only=True),
    "train": Command("train VT-3DCapsNet with keras fit under MirroredStrategy"),
    "evaluate": Command("accuracy, per-class P/R/F1, UAR/WAR, confusion matrix"),
    "check-data": Command("read every shard of a preprocessed data set: checksums, schema, counts"),
    "crossval": Command("subject-independent K-fold cross-validation, one model per fold"),
    "export": Command("write a versioned SavedModel for TensorFlow Serving"),
    "serve": Command("serve SavedModels over TF Serving's REST and gRPC APIs"),
    "predict": Command("say which emotion each face of a video or photo shows, clip by clip"),
    "stream": Command("emotions of every face in a camera, file or URL stream, as they come"),
    "profile": Command("parameters and FLOPs per clip of a preset"),
    "pipeline": Command("run the TFX-style chain ExampleGen -> ... -> Push from a config"),
    "demo": Command("the whole system on a generated synthetic set (`make demo`)"),
}

EPILOG = ("Run `vtcaps COMMAND --help` for the options of one command.\n\n"
          "exit status:\n" + exit_status_table() + "\n")


def command_module(name: str) -> str:
    """The module holding command `name`'s build_parser and main."""
    return f"vtcaps_tf.cli.{name.replace('-', '_')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtcaps",
        description="VT-3DCapsNet: video facial-expression recognition, from videos to a served model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up and C++ log lines and full tracebacks")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def _discard_unwritable_stdout() -> None:
    """When stdout cannot take what it buffers (a closed pipe, a full disk), send it to /dev/null:
    the interpreter's own flush at exit would fail again and end the process with status 120."""
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run_command(name: str, argv: list[str], verbose: bool = False) -> int:
    """Run one subcommand and turn its outcome into an exit status (`vtcaps_tf.errors`)."""
    command = COMMANDS[name]
    tensorflow_defaults()
    if not verbose:
        quiet_tensorflow()
    try:
        try:
            module = importlib.import_module(command_module(name))
        except ModuleNotFoundError as err:
            if err.name and command_module(name).startswith(err.name):
                print(f"usage: vtcaps {name} ...\nvtcaps {name}: not available in this installation "
                      f"({command_module(name)} is missing)", file=sys.stderr)
                return EXIT_USAGE
            raise
        # --help and flag errors are answered here, before the command's library loads.
        parser = module.build_parser()
        if command.known_args_only:
            parser.parse_known_args(argv)
        else:
            parser.parse_args(argv)
        status = int(module.main(argv))
        sys.stdout.flush()  # output that cannot be written fails the command
        return status
    except UsageError as err:
        print(f"vtcaps {name}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except PreemptedError as err:
        print(f"vtcaps {name}: preempted: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        print(f"vtcaps {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the command's failure becomes one line and status 1
        _discard_unwritable_stdout()
        if verbose:
            traceback.print_exc()
        print(f"vtcaps {name}: error: {type(err).__name__}: {err}"
              + ("" if verbose else f" (`vtcaps --verbose {name} ...` shows the traceback)"),
              file=sys.stderr)
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    verbose = False
    # Top-level options come before COMMAND; everything after it belongs to the command.
    while argv and argv[0].startswith("-"):
        option = argv.pop(0)
        if option in ("-h", "--help"):
            parser.print_help()
            return EXIT_OK
        if option == "--verbose":
            verbose = True
        elif option == "--version":
            from vtcaps_tf import __version__

            print(f"vtcaps {__version__}")
            return EXIT_OK
        else:
            parser.error(f"unknown option {option!r} (options of a command go after its name)")
    if not argv:
        parser.print_help()
        return EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    return run_command(name, rest, verbose=verbose)


if __name__ == "__main__":
    sys.exit(main())
