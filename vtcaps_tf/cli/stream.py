"""`vtcaps stream SOURCE`: emotions of every face in a live stream, as they come
(`vtcaps_tf.apps.stream.stream_faces`).

    vtcaps stream 0 --saved-model saved_models/vtcaps                 # camera 0
    vtcaps stream rtsp://camera.local/live --server http://localhost:8501
    vtcaps stream talk.mp4 --saved-model saved_models/vtcaps --realtime --output preds.jsonl

Exits 0 when frames were analysed, 1 when the source gave none, 130 when Ctrl-C ended it (after
the summary line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from vtcaps_tf.apps import options as app_options  # the standard library only
from vtcaps_tf.cli.predict import add_model_arguments, model_source
from vtcaps_tf.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtcaps stream", description=(
        "Emotions of every face in a camera, a video file or a stream URL, printed as JSON lines "
        "as they come, with the latency from a window's newest frame to its prediction."))
    p.add_argument("source", help="camera index (0, 1, ...), video file, or URL (rtsp://, http://)")
    add_model_arguments(p)
    p.add_argument("--every", type=int, default=None,
                   help="frames between two predictions of a face (default: the clip length N)")
    p.add_argument("--realtime", action="store_true",
                   help="play a file at its own frame rate, dropping frames when behind")
    p.add_argument("--faces", choices=app_options.FACES, default=app_options.FACES[0],
                   help="every face, or the largest of each frame (default: all)")
    p.add_argument("--max-faces", type=int, default=app_options.DEFAULT_MAX_FACES,
                   help=f"faces analysed per frame at most, the largest; the others are reported as "
                        f"skipped (default {app_options.DEFAULT_MAX_FACES})")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--output", help="write the JSON lines to this file instead of stdout")
    p.add_argument("--annotate", metavar="OUT.mp4", help="also write the analysed frames, annotated")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary lines on stderr")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    options = app_options.StreamOptions(
        source=args.source, model=model_source(args), every=args.every, realtime=args.realtime,
        faces=args.faces, max_faces=args.max_faces, max_frames=args.max_frames,
        annotate=args.annotate)
    from vtcaps_tf.apps.stream import stream_faces

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        out = (stack.enter_context(open(args.output, "w", encoding="utf-8")) if args.output
               else sys.stdout)
        summary = stream_faces(options, out, say)
    if summary["interrupted"]:
        say("stopped")
    say("summary: " + json.dumps(summary))
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary["frames_analysed"] else EXIT_FAILURE
