"""The one atomic-write helper and the writers that go through it: a writer killed (SIGKILL) at
each point of a write, or out of disk, leaves no output that reads as valid, and a rerun writes the
same bytes as a run never interrupted (tests/crashing_writes.py injects the faults)."""

import errno
import json
import os
import signal

import pytest

from tests.crashing_writes import KILL_POINTS, full_disk, killed_at, visible_files
from vtcaps_tf.utils import atomic_files


def test_write_json_replaces_the_file_in_one_step(tmp_path):
    path = str(tmp_path / "a.json")
    atomic_files.write_json(path, {"x": 1})
    atomic_files.write_json(path, {"x": [1, 2]})
    assert json.loads(open(path).read()) == {"x": [1, 2]}
    assert os.listdir(tmp_path) == ["a.json"]


def test_an_error_in_the_block_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = str(tmp_path / "notes.txt")
    atomic_files.write_text(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_files.atomic_write(path) as f:
            f.write("new, cut short")
            raise RuntimeError("the writer failed")
    assert open(path).read() == "old\n"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_temporary_names_keep_the_extension_and_are_hidden(tmp_path):
    tmp = atomic_files.temporary_name(str(tmp_path / "model.keras"))
    name = os.path.basename(tmp)
    assert name.startswith(".model") and name.endswith(".keras")
    assert atomic_files.is_temporary(name) and not atomic_files.is_temporary("model.keras")
    # a shard's temporary name does not match the readers' glob `train-*.tfrecord.gz`
    assert not atomic_files.temporary_name("d/train-00000-of-00001.tfrecord.gz").startswith("d/train-")


def test_a_folder_appears_whole_and_never_replaces_another(tmp_path):
    target = str(tmp_path / "7")
    with atomic_files.atomic_path(target, replace=False) as tmp:
        os.makedirs(os.path.join(tmp, "assets"))
        open(os.path.join(tmp, "assets", "a.txt"), "w").write("a")
        assert not os.path.exists(target)
    assert open(os.path.join(target, "assets", "a.txt")).read() == "a"
    with pytest.raises(OSError):
        with atomic_files.atomic_path(target, replace=False) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "b.txt"), "w").write("b")
    assert sorted(os.listdir(target)) == ["assets"]
    assert os.listdir(tmp_path) == ["7"]


def test_a_file_is_not_replaced_when_replace_is_off(tmp_path):
    path = str(tmp_path / "card.json")
    atomic_files.write_text(path, "first")
    with pytest.raises(FileExistsError):
        with atomic_files.atomic_path(path, replace=False) as tmp:
            open(tmp, "w").write("second")
    assert open(path).read() == "first" and os.listdir(tmp_path) == ["card.json"]


# ---------------------------------------------------------------------------------------------
# the writers: every one of them, killed at every point and out of disk


def _metadata(folder):
    from vtcaps_pipeline.beam import preprocess

    def write():
        preprocess._write_json(os.path.join(folder, "metadata.json"),
                               {"schema_version": 3, "classes": ["a", "b"], "counts": {"train": 4}})
    return write, ["metadata.json"]


def _train_config(folder):
    from vtcaps_tf.config.train_options import TrainConfig
    from vtcaps_tf.train import setup

    config = TrainConfig(data_dir="data", run_dir="run", preset="tiny", epochs=3)
    return (lambda: setup.write_train_config(config, folder)), [setup.CONFIG_FILE]


def _model_card(folder):
    from vtcaps_tf.export import model_card

    card = {"model": "vt3dcapsnet", "classes": ["anger", "happy"], "preset": "tiny"}
    return (lambda: model_card.write_model_card(folder, card)), [f"assets/{model_card.CARD_FILE}"]


def _evaluation_report(folder):
    from vtcaps_tf.evaluation import evaluate

    labels, probs = [0, 1, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]
    report = evaluate.build_report(labels, probs, ["anger", "happy"])
    return (lambda: evaluate.write_report(report, folder)), ["confusion_matrix.png", "report.json",
                                                              "report.md"]


def _execution_record(folder):
    from vtcaps_pipeline.orchestration import runner

    pipeline = runner.Pipeline(folder, steps=[], config={})
    return (lambda: pipeline._write_execution("Train", {"fingerprint": "f00d", "outputs": {}})), \
        [os.path.join("Train", runner.EXECUTION_FILE)]


WRITERS = {"metadata.json": _metadata, "train_config.json": _train_config,
           "model card": _model_card, "evaluation report": _evaluation_report,
           "pipeline execution record": _execution_record}


def _contents(folder, names):
    return {n: open(os.path.join(folder, n), "rb").read() for n in names}


@pytest.mark.parametrize("point", KILL_POINTS)
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_writer_killed_leaves_nothing_partial_and_a_rerun_completes(writer, point, tmp_path):
    reference, crashed = str(tmp_path / "reference"), str(tmp_path / "crashed")
    write, outputs = WRITERS[writer](reference)
    write()
    expected = _contents(reference, outputs)

    write, _ = WRITERS[writer](crashed)
    assert killed_at(point, write) == signal.SIGKILL
    for name in visible_files(crashed):
        # only whole outputs are visible: after the rename, the file is the complete one
        assert name in outputs and _contents(crashed, [name]) == {name: expected[name]}, name
    if point != "after-rename":
        assert not set(outputs) & set(visible_files(crashed))
    write()
    assert _contents(crashed, outputs) == expected
    assert visible_files(crashed) == visible_files(reference)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_writer_out_of_disk_fails_cleanly_and_a_rerun_completes(writer, tmp_path, monkeypatch):
    reference, full = str(tmp_path / "reference"), str(tmp_path / "full")
    write, outputs = WRITERS[writer](reference)
    write()
    write, _ = WRITERS[writer](full)
    with full_disk(monkeypatch), pytest.raises(OSError) as caught:
        write()
    assert caught.value.errno == errno.ENOSPC
    assert not set(outputs) & set(visible_files(full))
    assert not [n for _, _, files in os.walk(full) for n in files]  # no temporary left either
    write()
    assert _contents(full, outputs) == _contents(reference, outputs)


def _history_rows(path):
    return open(path).read().splitlines()


@pytest.mark.parametrize("point", KILL_POINTS)
def test_history_csv_killed_while_writing_keeps_the_finished_epochs(point, tmp_path, monkeypatch):
    from vtcaps_tf.train.callbacks import HistoryCSV

    path = str(tmp_path / "history.csv")
    history = HistoryCSV(path)
    history.on_train_begin()
    history.on_epoch_end(0, {"loss": 2.5, "accuracy": 0.25})
    history.on_epoch_end(1, {"loss": 1.5, "accuracy": 0.5})
    two_epochs = _history_rows(path)
    assert two_epochs == ["epoch,accuracy,loss,val_accuracy,val_loss",
                          "0,0.25,2.5,NA,NA", "1,0.5,1.5,NA,NA"]

    assert killed_at(point, lambda: history.on_epoch_end(2, {"loss": 0.5, "accuracy": 0.75})) \
        == signal.SIGKILL
    after = _history_rows(path)
    assert after == two_epochs or (point == "after-rename" and after == two_epochs + ["2,0.75,0.5,NA,NA"])
    with full_disk(monkeypatch), pytest.raises(OSError):
        history.on_epoch_end(2, {"loss": 0.5, "accuracy": 0.75})
    assert _history_rows(path) in (two_epochs, two_epochs + ["2,0.75,0.5,NA,NA"])

    resumed = HistoryCSV(path)  # the rerun: a resumed training appends its epochs
    resumed.on_train_begin()
    resumed.on_epoch_end(2, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.9, "val_accuracy": 0.5})
    assert _history_rows(path)[-1] == "2,0.75,0.5,0.5,0.9"
    assert _history_rows(path)[:3] == two_epochs
