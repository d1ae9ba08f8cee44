"""`vtcaps predict`: which emotion each face of a video or photo shows, clip by clip
(`vtcaps_tf.apps.predict.predict_paths`).

    vtcaps predict clip.avi videos/ --server http://localhost:8501 --model-name vtcaps
    vtcaps predict clip.mp4 group.jpg --saved-model saved_models/vtcaps --format json --plot timeline.png

Exits 0 when at least one face got an emotion, 1 when none did.
"""

from __future__ import annotations

import argparse
import sys

from vtcaps_tf.apps import options as app_options  # the standard library only
from vtcaps_tf.errors import EXIT_FAILURE, EXIT_OK


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Where the model is: --server or --saved-model (one of them), the served name and version,
    and whether a version's TFLite model runs in place of its SavedModel."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="REST address of TF Serving or `vtcaps serve`, e.g. http://localhost:8501")
    where.add_argument("--saved-model", help="SavedModel folder (a version, or a base path: its newest), "
                                             "or a .tflite file written by `vtcaps export --tflite`")
    p.add_argument("--prefer-tflite-model", action="store_true",
                   help="with --saved-model: run the version's model.tflite (`vtcaps export --tflite`) "
                        "in place of its SavedModel when it has one")
    p.add_argument("--model-name", default=app_options.DEFAULT_MODEL_NAME,
                   help=f"served model name (default: {app_options.DEFAULT_MODEL_NAME})")
    p.add_argument("--model-version", type=int, default=None, help="served version (default: newest)")


def model_source(args: argparse.Namespace) -> app_options.ModelSource:
    return app_options.ModelSource(args.server, args.saved_model, args.model_name, args.model_version,
                                   args.prefer_tflite_model)


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_tf.apps.predict_report import FORMATS  # numpy, no TensorFlow

    p = argparse.ArgumentParser(
        prog="vtcaps predict",
        description="Say which emotion each face of each video or photo shows, with a per-clip timeline.")
    p.add_argument("paths", nargs="+", metavar="VIDEO_OR_DIR",
                   help="video files, photos, frame folders, or folders searched for videos")
    add_model_arguments(p)
    p.add_argument("--format", choices=sorted(FORMATS), default="table", help="output format (default: table)")
    p.add_argument("--output", help="write the results to this file instead of stdout")
    p.add_argument("--plot", help="PNG file for the per-clip probabilities over time")
    p.add_argument("--faces", choices=app_options.FACES, default=app_options.FACES[0],
                   help="every face (each its own timeline), or the largest of each frame (default: all)")
    p.add_argument("--max-faces", type=int, default=app_options.DEFAULT_MAX_FACES,
                   help=f"faces analysed in one frame at most, the largest; the others are reported as "
                        f"skipped (default {app_options.DEFAULT_MAX_FACES})")
    p.add_argument("--max-frames", type=int, default=None,
                   help="refuse videos longer than this many frames, with an error (default: no limit)")
    p.add_argument("--annotate", metavar="OUT.mp4",
                   help="write the video with each face's box, emotion and probability bar (one video only)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"clips per model call (default {app_options.REST_BATCH} over REST, "
                        f"{app_options.IN_PROCESS_BATCH} in process)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    options = app_options.PredictOptions(
        model=model_source(args), faces=args.faces, max_faces=args.max_faces,
        max_frames=args.max_frames, batch_size=args.batch_size, annotate=args.annotate,
        format=args.format, output=args.output, plot=args.plot)
    from vtcaps_tf.apps.predict import predict_paths, write_results

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    results = predict_paths(args.paths, options, say)
    write_results(results, options, say)
    predicted = sum(r.ok for r in results)
    say(f"{predicted} of {len(results)} faces and videos predicted")
    return EXIT_OK if predicted else EXIT_FAILURE
