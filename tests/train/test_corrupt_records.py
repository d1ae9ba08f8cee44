"""A truncated training shard: `vtcaps train` names it (and the record where it stops) in the
first line of its error and exits 1; with --skip-corrupt-records it trains on, counting the
clips left out in the history (and so in TensorBoard)."""

import csv
import os

import pytest

from tests.data.fixtures import write_dataset
from tests.data.test_integrity import truncate, whole_records_by_hand
from vtcaps_tf.cli import main as vtcaps
from vtcaps_tf.data import features
from vtcaps_tf.errors import EXIT_FAILURE, EXIT_OK

ARGS = ["--preset", "tiny", "--epochs", "1", "--batch-size", "4", "--steps-per-epoch", "1",
        "--cpu-replicas", "1", "--no-augment", "--verbose", "0"]


@pytest.mark.slow
def test_a_truncated_shard_is_named_and_skipped_on_request(tmp_path, capsys):
    data = write_dataset(str(tmp_path / "data"), counts={"train": 12}, shards=2)
    bad = features.split_files(data, "train")[1]
    truncate(bad)
    readable = whole_records_by_hand(bad)
    assert readable < 6  # 12 records dealt over 2 shards, one clip each

    status = vtcaps.main(["train", "--data", data, "--run-dir", str(tmp_path / "stopped"), *ARGS])
    err = capsys.readouterr().err
    assert status == EXIT_FAILURE
    first = next(line for line in err.splitlines() if line.startswith("vtcaps train: error:"))
    assert first.startswith(f"vtcaps train: error: CorruptDataError: {bad}: record {readable}: ")
    assert not os.path.exists(tmp_path / "stopped" / "model.keras")

    run_dir = tmp_path / "skipped"
    status = vtcaps.main(["train", "--data", data, "--run-dir", str(run_dir), *ARGS,
                          "--skip-corrupt-records"])
    err = capsys.readouterr().err
    assert status == EXIT_OK, err[-3000:]
    assert f"{6 - readable} of 12 clips skipped; {bad}: record {readable}: " in err
    with open(run_dir / "logs" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["skipped_clips"]) for r in rows] == [6 - readable]
    assert os.path.isfile(run_dir / "model.keras")
