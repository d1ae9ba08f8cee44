"""`vtcaps preprocess`: the flags of `PreprocessOptions` (vtcaps_tf.config.preprocess); every flag
they do not name goes to Beam (--runner, --direct_num_workers, ...). Building the parser imports
neither Beam nor TensorFlow; `main` loads the job (vtcaps_pipeline.beam.preprocess) to run it."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vtcaps_tf.config.options import add_arguments, from_args
from vtcaps_tf.config.preprocess import PreprocessOptions
from vtcaps_tf.errors import EXIT_FAILURE, EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The job's own flags; parse with `parse_known_args`: the rest goes to Beam."""
    parser = argparse.ArgumentParser(
        prog="vtcaps preprocess",
        description="Beam job: face videos -> aligned face clips + landmarks -> TFRecords split by "
                    "subject. Unknown flags go to Beam (--runner, --direct_num_workers, ...).")
    add_arguments(parser, PreprocessOptions, required=("output",))
    return parser


def parse(argv: list[str]) -> tuple[PreprocessOptions, list[str]]:
    """(the job's options, Beam's flags) from a command line. Raises OptionError (a usage error)
    for values the options refuse; argparse exits with status 2 on a malformed flag."""
    args, beam_args = build_parser().parse_known_args(argv)
    return from_args(PreprocessOptions, args), beam_args


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options, beam_args = parse(argv)
    from vtcaps_pipeline.beam import checks, preprocess

    try:
        stats = preprocess.run(options, beam_args)
    except preprocess.JobStalledError as err:
        print(f"vtcaps preprocess: error: {err}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # The runner's job thread still waits for the workers that never came: do not join it.
        os._exit(EXIT_FAILURE)
    except (checks.ValidationError, preprocess.PreprocessError) as err:  # the output is unusable
        print(f"vtcaps preprocess: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    splits = ", ".join(f"{s} {v['clips']} clips" for s, v in stats["splits"].items())
    print(f"preprocess: done: {splits}; {stats['videos']['dead_letters']} dead letters "
          f"{stats['dead_letters'] or ''}")
    return EXIT_OK


