"""`vtcaps profile`: parameters and FLOPs per clip of a preset, next to the paper
(`vtcaps_tf.models.profile.profile_preset`)."""

from __future__ import annotations

import argparse
import json

DEFAULT_PRESET = "paper"  # the preset the paper's Table 3 describes


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_tf.config.presets import PRESETS  # plain dataclasses, no TensorFlow

    p = argparse.ArgumentParser(prog="vtcaps profile",
                                description="Parameters and FLOPs per clip of a preset, next to the paper.")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help=f"model preset to profile (default: {DEFAULT_PRESET})")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_tf.models.profile import format_table, profile_preset

    result = profile_preset(args.preset)
    print(json.dumps(result) if args.json else format_table(result))
    return 0
