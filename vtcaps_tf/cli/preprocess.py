"""`vtcaps preprocess`: the parser of `vtcaps_pipeline.beam.options` and the Beam job's run."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_pipeline.beam.options import build_parser as job_parser

    return job_parser()


def main(argv: list[str]) -> int:
    from vtcaps_pipeline.beam import preprocess

    return preprocess.cli_main(argv)
