"""`vtcaps crossval`: the parser and run of `vtcaps_tf.train.crossval`."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_tf.train import crossval

    return crossval.build_parser()


def main(argv: list[str]) -> int:
    from vtcaps_tf.train import crossval

    return crossval.cli_main(argv)
