"""`vtcaps check-data DIR`: every shard of a preprocessing output read to its end (checksums,
schema, shard set, clip counts against metadata.json), for data that was copied or moved; `main`
loads TensorFlow through `vtcaps_tf.data.integrity.check_data`."""

from __future__ import annotations

import argparse
import sys

from vtcaps_tf.errors import EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtcaps check-data", description=(
        "Read every shard of a `vtcaps preprocess` output to its end: record checksums, the "
        "schema, missing shards, clip counts against metadata.json. One line per problem on "
        "stderr; exit status 1 when there is one."))
    parser.add_argument("data_dir", metavar="DIR", help="output directory of `vtcaps preprocess`")
    parser.add_argument("--split", action="append", metavar="NAME",
                        help="check this split only (train, val, test or a fold; repeatable; "
                             "default: every split metadata.json names)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_tf.data.integrity import CorruptDataError, check_data

    splits = check_data(args.data_dir, args.split)
    for s in splits:
        expected = "" if s.expected is None else f" (metadata.json: {s.expected})"
        print(f"{s.split}: {s.shards} shard(s), {s.clips} clips read{expected}"
              + (f", {len(s.problems)} problem(s)" if s.problems else ""))
    problems = [p for s in splits for p in s.problems]
    for problem in problems:
        print(f"vtcaps check-data: {problem}", file=sys.stderr)
    if problems:
        raise CorruptDataError(f"{len(problems)} problem(s) in {args.data_dir}, the first: {problems[0]}")
    print(f"{args.data_dir}: every shard reads to its end and the counts agree")
    return EXIT_OK
