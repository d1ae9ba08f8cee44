"""The `vtcaps` command: one subcommand per stage, each implemented in its own module.

`vtcaps --help` and `vtcaps COMMAND --help` do not import TensorFlow: the package `vtcaps_tf` is
light, the command modules are imported only when their command runs, and train, export and
profile, whose modules import TensorFlow at load time, take their parsers from
`vtcaps_tf.config.flags` (preprocess from `vtcaps_pipeline.beam.options`, apart from the Beam
job). Each module exposes `cli_main(argv) -> int`.

Unless `vtcaps --verbose ...` is given, TensorFlow's start-up chatter (CUDA plugin registration,
absl's pre-initialisation notes) is kept off stderr; other stderr output passes unchanged.
Exit statuses (vtcaps_tf.errors): 0 ok, 1 failure while running, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import traceback

from vtcaps_tf.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError


@dataclasses.dataclass(frozen=True)
class Command:
    module: str  # holds cli_main(argv) -> int
    help: str
    # "module:function" returning the command's argparse parser without importing TensorFlow; the
    # arguments are checked with it before `module` loads. None: `module` parses.
    parser: str | None
    # Check only the flags the parser knows and leave the rest to the command (preprocess hands
    # unknown flags to Beam, which tells a bad one).
    known_args_only: bool = False


SUBCOMMANDS = {
    "synth": Command("vtcaps_pipeline.synth.render", "generate a synthetic expression video set (folder layout + manifest)",
                     "vtcaps_pipeline.synth.render:build_parser"),
    "preprocess": Command("vtcaps_tf.cli.preprocess", "Beam job: face videos -> aligned clips + landmarks -> TFRecords",
                          "vtcaps_tf.cli.preprocess:build_parser", known_args_only=True),
    "train": Command("vtcaps_tf.cli.train", "train VT-3DCapsNet with keras fit under MirroredStrategy",
                     "vtcaps_tf.cli.train:build_parser"),
    "evaluate": Command("vtcaps_tf.cli.evaluate", "accuracy, per-class P/R/F1, UAR/WAR, confusion matrix",
                        "vtcaps_tf.cli.evaluate:build_parser"),
    "crossval": Command("vtcaps_tf.cli.crossval", "subject-independent K-fold cross-validation, one model per fold",
                        "vtcaps_tf.cli.crossval:build_parser"),
    "export": Command("vtcaps_tf.export.saved_model", "write a versioned SavedModel for TensorFlow Serving",
                      "vtcaps_tf.config.flags:export_parser"),
    "serve": Command("vtcaps_tf.serving.server", "serve SavedModels over TF Serving's REST and gRPC APIs",
                     "vtcaps_tf.serving.server:build_parser"),
    "predict": Command("vtcaps_tf.apps.predict",
                       "say which emotion each face of a video or photo shows, clip by clip",
                       "vtcaps_tf.apps.predict:build_parser"),
    "stream": Command("vtcaps_tf.apps.stream",
                      "emotions of every face in a camera, file or URL stream, as they come",
                      "vtcaps_tf.apps.stream:build_parser"),
    "profile": Command("vtcaps_tf.models.profile", "parameters and FLOPs per clip of a preset",
                       "vtcaps_tf.config.flags:profile_parser"),
    "pipeline": Command("vtcaps_pipeline.orchestration.runner", "run the TFX-style chain ExampleGen -> ... -> Push from a config",
                        "vtcaps_pipeline.orchestration.runner:build_parser"),
    "demo": Command("vtcaps_pipeline.orchestration.demo", "the whole system on a generated synthetic set (`make demo`)",
                    "vtcaps_pipeline.orchestration.demo:build_parser"),
}

EPILOG = f"""\
Run `vtcaps COMMAND --help` for the options of one command.

exit status:
  {EXIT_OK}  ok
  {EXIT_FAILURE}  failure while running (a one-line message; `vtcaps --verbose` adds the traceback)
  {EXIT_USAGE}  bad usage or input (unknown flag, missing or malformed input path)
"""

# Lines TensorFlow's native libraries print while `import tensorflow` registers its CUDA plugins.
# TF_CPP_MIN_LOG_LEVEL does not reach the absl lines logged before absl::InitializeLog.
_STARTUP_NOISE = re.compile(
    r"Unable to register (cuFFT|cuDNN|cuBLAS) factory"
    r"|computation placer already registered"
    r"|All log messages before absl::InitializeLog\(\) is called"
    r"|Could not find cuda drivers on your machine"
    r"|cpu_feature_guard\.cc|rebuild TensorFlow with the appropriate compiler flags")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtcaps",
        description="VT-3DCapsNet: video facial-expression recognition, from videos to a served model.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up and C++ log lines and full tracebacks")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in SUBCOMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


@contextlib.contextmanager
def _filtered_stderr():
    """Send file descriptor 2 to a temporary file, then copy it back without `_STARTUP_NOISE`.

    At the descriptor level because the noise comes from C++, not from Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [ln for ln in text.splitlines(keepends=True) if not _STARTUP_NOISE.search(ln)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader with stderr filtered; everything else is the wrapped loader's."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _filtered_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Filters stderr while `tensorflow` is first imported, whichever module imports it, whenever."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and so that find_spec below finds the real one
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up log lines off stderr; the user's own settings win."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # 3: also the E-level plugin-factory lines
    try:
        from absl import logging as absl_logging
    except ImportError:
        absl_logging = None
    if absl_logging is not None and absl_logging.get_verbosity() == absl_logging.WARNING:  # the default
        absl_logging.set_verbosity(absl_logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport)
                                                   for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


# Environment every command runs TensorFlow with; the user's own settings win. oneDNN kernels:
# TensorFlow turns them on by default only on CPUs with AVX-512 or AMX; on the AVX2 machines this
# project is measured on they make a `tiny` training step about 2.6x faster
# (`benchmarks/train_step.py`, BUILD.md), and every test passes with them.
TENSORFLOW_DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "1"}


def tensorflow_defaults() -> None:
    """Apply TENSORFLOW_DEFAULTS where the environment does not set them (before TF loads)."""
    for key, value in TENSORFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _import(ref: str):
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def run_command(name: str, argv: list[str], verbose: bool = False) -> int:
    """Run one subcommand and turn its outcome into an exit status (see the module docstring)."""
    command = SUBCOMMANDS[name]
    tensorflow_defaults()
    if not verbose:
        quiet_tensorflow()
    try:
        if command.parser is not None:
            # Usage errors and --help answered before the command's module (and TensorFlow) load.
            parser = _import(command.parser)()
            if command.known_args_only:
                parser.parse_known_args(argv)
            else:
                parser.parse_args(argv)
        try:
            module = importlib.import_module(command.module)
        except ModuleNotFoundError as err:
            if err.name and command.module.startswith(err.name):
                print(f"usage: vtcaps {name} ...\nvtcaps {name}: not available in this installation "
                      f"({command.module} is missing)", file=sys.stderr)
                return EXIT_USAGE
            raise
        return int(module.cli_main(argv) or 0)
    except UsageError as err:
        print(f"vtcaps {name}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"vtcaps {name}: interrupted", file=sys.stderr)
        return 130  # the shell's status for SIGINT
    except Exception as err:  # noqa: BLE001 - the command's failure becomes one line and status 1
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
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    return run_command(name, rest, verbose=verbose)


if __name__ == "__main__":
    sys.exit(main())
