"""Shards read to their end, record by record: which shard is corrupt or cut short, and where.

TensorFlow's record reader stops at a bad record with a DataLossError that names neither the file
nor the record. `check_shard` reads one shard alone (each record's checksums, through the gzip
stream, and its parse with the schema of `features.py`); `naming_corrupt_shard` turns a
DataLossError of a pipeline over several shards into one line naming the first bad one;
`readable_parts` is what `--skip-corrupt-records` trains on: each shard up to its first bad record
(neither a gzip stream nor a TFRecord file can be read past a bad block).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re

import tensorflow as tf

from vtcaps_tf.data import features

SKIP_HINT = "--skip-corrupt-records goes on without it; `vtcaps check-data DIR` checks every shard"


class CorruptDataError(RuntimeError):
    """A shard cannot be read to its end (a failure while running: exit status 1)."""


@dataclasses.dataclass
class ShardCheck:
    path: str
    records: int  # whole, parsable records read before the first bad one (or all of them)
    clips: int  # clips in those records
    problem: str | None = None  # None: read to its end

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        return f"{self.path}: record {self.records}: {self.problem}"


def _short(err: Exception) -> str:
    """A TensorFlow error's own words, without the op and function names it wraps them in."""
    text = getattr(err, "message", None) or str(err)
    text = re.sub(r"\{\{[^}]*\}\}", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\].*", "", text, flags=re.S)
    return " ".join(text.split()) or type(err).__name__


def check_shard(path: str) -> ShardCheck:
    """Read `path` record by record; where it stops, and why (None when it reads to its end)."""
    records = clips = 0
    iterator = iter(tf.data.TFRecordDataset([path], compression_type="GZIP"))
    while True:
        try:
            serialized = next(iterator)
        except StopIteration:
            return ShardCheck(path, records, clips)
        except tf.errors.OpError as err:
            return ShardCheck(path, records, clips, f"unreadable ({_short(err)})")
        try:
            context, _ = features.parse_example(serialized)
        except tf.errors.OpError as err:
            return ShardCheck(path, records, clips, f"not a record of the schema ({_short(err)})")
        records += 1
        clips += int(features.num_clips(context))


def first_corrupt(files) -> ShardCheck | None:
    for path in files:
        check = check_shard(path)
        if not check.ok:
            return check
    return None


@contextlib.contextmanager
def naming_corrupt_shard(files):
    """Turn a DataLossError raised while reading `files` into a CorruptDataError whose one line
    names the first shard that cannot be read and the record where it stops."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
        if isinstance(err, tf.errors.InvalidArgumentError) and "parse" not in str(err).lower():
            raise
        bad = first_corrupt(files)
        if bad is None:
            raise
        raise CorruptDataError(f"{bad.describe()} ({SKIP_HINT})") from None


@dataclasses.dataclass
class ReadableParts:
    """The readable records of each shard, and what `--skip-corrupt-records` leaves out."""

    files: list  # every shard, in order
    records: list  # readable records of each (all of a shard that reads to its end)
    clips: int  # clips in the readable records
    corrupt: list  # ShardCheck of each shard that stops early

    def skipped_clips(self, expected: int | None) -> int | None:
        """Clips left out, against the count the metadata promises (None: not known)."""
        return None if expected is None else max(0, int(expected) - self.clips)

    def summary(self, expected: int | None) -> str:
        skipped = self.skipped_clips(expected)
        lost = f"{skipped} of {expected} clips skipped" if skipped is not None else "clips skipped"
        return f"{lost}; " + "; ".join(c.describe() for c in self.corrupt)


def readable_parts(files) -> ReadableParts:
    checks = [check_shard(f) for f in files]
    return ReadableParts(list(files), [c.records for c in checks], sum(c.clips for c in checks),
                         [c for c in checks if not c.ok])


def record_dataset(files, records=None) -> tf.data.Dataset:
    """The serialized records of `files` (gzip TFRecords), read in parallel; `records`: how many
    of each file to read (`ReadableParts.records`), default all."""
    files = list(files)
    parallel = min(len(files), 8) if len(files) > 1 else None
    if records is None:
        return tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=parallel)
    parts = tf.data.Dataset.from_tensor_slices((files, tf.constant(records, tf.int64)))
    return parts.interleave(
        lambda path, n: tf.data.TFRecordDataset(path, compression_type="GZIP").take(n),
        cycle_length=parallel or 1, block_length=1, num_parallel_calls=parallel, deterministic=True)


_SHARD_NAME = re.compile(r"^(?P<split>.+)-(?P<index>\d+)-of-(?P<count>\d+)"
                         + re.escape(features.SHARD_SUFFIX) + "$")


@dataclasses.dataclass
class SplitCheck:
    split: str
    shards: int
    clips: int  # clips read
    expected: int | None  # clips metadata.json promises
    problems: list


def check_split(data_dir: str, split: str, expected: int | None) -> SplitCheck:
    """Every shard of one split read to its end, the shard set complete (`-of-N` names), and the
    clips counted against `expected`."""
    files = features.split_files(data_dir, split)
    problems, clips, numbered = [], 0, {}
    for path in files:
        match = _SHARD_NAME.match(os.path.basename(path))
        if match:
            numbered.setdefault(int(match["count"]), set()).add(int(match["index"]))
        check = check_shard(path)
        clips += check.clips
        if not check.ok:
            problems.append(check.describe())
    for count, present in sorted(numbered.items()):
        for index in sorted(set(range(count)) - present):
            name = f"{split}-{index:05d}-of-{count:05d}{features.SHARD_SUFFIX}"
            problems.append(f"{os.path.join(data_dir, name)}: missing")
    if len(numbered) > 1:
        problems.append(f"{split}: shards of {len(numbered)} different writes ({sorted(numbered)} shards each)")
    if expected is not None and clips != int(expected):
        problems.append(f"{split}: {clips} clips read, metadata.json says {expected}")
    return SplitCheck(split, len(files), clips, expected, problems)


def check_data(data_dir: str, splits=None) -> list[SplitCheck]:
    """Every split of a preprocessing output, or the named ones (`vtcaps check-data`):
    metadata.json against the schema (SchemaError when it cannot be read), each shard's checksums
    and records, the shard set, the clip counts."""
    meta = features.read_metadata(data_dir)
    known = features.data_splits(meta)
    unknown = sorted(set(splits or ()) - set(known))
    if unknown:
        raise features.SchemaError(f"{data_dir!r} holds the splits {', '.join(known)}, not {', '.join(unknown)}")
    counts = meta.get("counts") or {}
    return [check_split(data_dir, split, counts.get(split)) for split in (splits or known)]
