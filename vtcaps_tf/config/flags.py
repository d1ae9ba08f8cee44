"""Argument parsers of the commands whose modules import TensorFlow when they load.

`vtcaps export|profile --help` and their flag errors are answered from here, without TensorFlow
(a second instead of several); the command modules build their parsers with these functions, so
each flag and default is defined once. Only the standard library and the preset table are imported.
"""

from __future__ import annotations

import argparse

from vtcaps_tf.config.presets import preset_names


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtcaps export", description=(
        "Export a trained model as base_path/<version>/ (a TF Serving SavedModel with the "
        "serving_default and serve_examples signatures). By default only 3D-CapsNet is served; "
        "--with-teacher keeps the TPN-ERM head."))
    p.add_argument("--model", required=True, help="a .keras file written by `vtcaps train`")
    p.add_argument("--base-path", required=True, help="saved_models/NAME: versions go below it")
    p.add_argument("--version", type=int, default=None,
                   help="integer version (default: one more than the newest existing one)")
    p.add_argument("--evaluation", help="a `vtcaps evaluate` report.json for the model card "
                   "(default: eval/report.json beside the model, when there is one)")
    p.add_argument("--with-teacher", action="store_true",
                   help="also serve TPN-ERM's tpn_probabilities; serving_default then needs "
                   "long_frames (the M-frame window) too")
    return p


def profile_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtcaps profile",
                                description="Parameters and FLOPs per clip of a preset, next to the paper.")
    p.add_argument("--preset", default="paper", choices=preset_names(),
                   help="model preset to profile (default: paper)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p
