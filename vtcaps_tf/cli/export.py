"""`vtcaps export`: a trained `.keras` model -> BASE_PATH/<version>/, a SavedModel for TF Serving,
with its TFLite model beside it when `--tflite` asks (`vtcaps_tf.export.saved_model.export_trained`)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_tf.export.tflite import DEFAULT_CALIBRATION_CLIPS, MODES  # numpy, no TensorFlow

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
    p.add_argument("--tflite", choices=MODES, default=None,
                   help="also write model.tflite (serving_default for the TFLite interpreter) into "
                        "the version: fp32, dynamic (int8 weights) or int8 (calibrated, needs "
                        "--calibration-data)")
    p.add_argument("--calibration-data", metavar="DIR",
                   help="a `vtcaps preprocess` output whose clips calibrate --tflite int8 (its "
                        "train split, or the first fold)")
    p.add_argument("--calibration-clips", type=int, metavar="N", default=None,
                   help=f"clips int8 calibrates on (default {DEFAULT_CALIBRATION_CLIPS})")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_tf.export.model_card import describe, read_model_card
    from vtcaps_tf.export.saved_model import export_trained

    path = export_trained(args.model, args.base_path, args.version, args.evaluation,
                          args.with_teacher, args.tflite, args.calibration_data,
                          args.calibration_clips)
    print(f"model card: {describe(read_model_card(path))}", file=sys.stderr)
    print(path)
    return 0
