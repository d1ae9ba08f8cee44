"""Shards read record by record: a truncated shard and a flipped byte are found, with the record
where reading stops, counted against an independent reader (Python's gzip and the TFRecord
framing read by hand)."""

import gzip
import json
import os
import struct
import zlib

import pytest
import tensorflow as tf

from tests.data.fixtures import write_dataset
from vtcaps_tf.data import dataset, features, integrity
from vtcaps_tf.data.contract import InputContract


def whole_records_by_hand(path) -> int:
    """Records of a gzip TFRecord file whose bytes are all there: each is a little-endian u64
    length, a 4-byte CRC, the data and a 4-byte CRC. Reads what the gzip stream yields before
    it breaks."""
    data = bytearray()
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1024):
                data += chunk
    except (EOFError, OSError, zlib.error):
        pass
    count, at = 0, 0
    while at + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        if at + 12 + length + 4 > len(data):
            break
        at += 12 + length + 4
        count += 1
    return count


@pytest.fixture
def shards(tmp_path):
    root = write_dataset(str(tmp_path / "data"), counts={"train": 8}, num_classes=2, shards=2)
    return features.split_files(root, "train")


def truncate(path, fraction=0.6):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * fraction)])


def test_a_whole_shard_reads_to_its_end(shards):
    check = integrity.check_shard(shards[0])
    assert check.ok and check.records == 4 and check.clips == 4  # 8 records dealt over 2 shards


def test_a_truncated_shard_is_named_with_the_record_where_it_stops(shards):
    truncate(shards[1])
    expected = whole_records_by_hand(shards[1])
    assert 0 < expected < 4
    check = integrity.check_shard(shards[1])
    assert not check.ok and check.records == expected
    assert check.describe().startswith(f"{shards[1]}: record {expected}: unreadable (")
    assert integrity.first_corrupt(shards).path == shards[1]


def test_a_flipped_byte_is_found(shards):
    data = bytearray(open(shards[0], "rb").read())
    data[len(data) // 2] ^= 0x01
    open(shards[0], "wb").write(bytes(data))
    check = integrity.check_shard(shards[0])
    assert not check.ok and check.records < 4


def test_a_pipeline_error_becomes_one_line_naming_the_shard(shards):
    truncate(shards[1])
    contract = InputContract(clip_frames=8, long_frames=16, image_size=32)
    with pytest.raises(integrity.CorruptDataError) as caught:
        with integrity.naming_corrupt_shard(shards):
            for _ in dataset.read_files(shards, contract):
                pass
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{shards[1]}: record {whole_records_by_hand(shards[1])}: ")
    assert "--skip-corrupt-records" in message


def test_readable_parts_read_each_shard_up_to_its_first_bad_record(shards):
    truncate(shards[1])
    good = whole_records_by_hand(shards[1])
    parts = integrity.readable_parts(shards)
    assert parts.records == [4, good] and parts.clips == 4 + good
    assert parts.skipped_clips(8) == 4 - good
    contract = InputContract(clip_frames=8, long_frames=16, image_size=32)
    read = sum(1 for _ in dataset.read_files(shards, contract, records=parts.records))
    assert read == 4 + good
    batches = dataset.make_dataset(shards, contract, 2, training=False, records=parts.records)
    assert sum(int(tf.shape(labels)[0]) for _, labels in batches) == 4 + good


def test_check_data_finds_a_flipped_byte_a_missing_shard_and_a_count_mismatch(tmp_path, capsys):
    from vtcaps_tf.cli import main as vtcaps

    root = write_dataset(str(tmp_path / "copied"), counts={"train": 8, "val": 4, "test": 4}, shards=2)
    assert vtcaps.main(["check-data", root]) == 0
    assert "train: 2 shard(s), 8 clips read (metadata.json: 8)" in capsys.readouterr().out

    train = features.split_files(root, "train")
    data = bytearray(open(train[0], "rb").read())
    data[len(data) // 2] ^= 0x01  # a flipped byte
    open(train[0], "wb").write(bytes(data))
    os.remove(features.split_files(root, "val")[1])  # a missing shard: val keeps 2 of its 4 clips
    meta = json.load(open(os.path.join(root, "metadata.json")))
    meta["counts"]["test"] = 5  # a count mismatch
    json.dump(meta, open(os.path.join(root, "metadata.json"), "w"))

    assert vtcaps.main(["check-data", root]) == 1
    err = capsys.readouterr().err.splitlines()
    bad_record = integrity.check_shard(train[0]).records
    expected = [
        f"vtcaps check-data: {train[0]}: record {bad_record}: unreadable",
        f"vtcaps check-data: {root}/val-00001-of-00002.tfrecord.gz: missing",
        "vtcaps check-data: val: 2 clips read, metadata.json says 4",
        "vtcaps check-data: test: 4 clips read, metadata.json says 5",
    ]
    for line in expected:
        assert sum(e.startswith(line) for e in err) == 1, (line, err)
    assert err[-1].startswith("vtcaps check-data: error: CorruptDataError: 5 problem(s) in ")
