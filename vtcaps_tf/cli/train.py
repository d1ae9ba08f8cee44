"""`vtcaps train`: the parser of `vtcaps_tf.config.flags` and `vtcaps_tf.train.fit`'s run."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_tf.config.flags import train_parser

    return train_parser()


def main(argv: list[str]) -> int:
    from vtcaps_tf.train.fit import cli_main

    return cli_main(argv)
