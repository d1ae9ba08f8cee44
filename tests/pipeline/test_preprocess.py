"""The whole job under TestPipeline: outputs read back through vtcaps_tf.data, every video
accounted for, bad inputs dead-lettered, and clear failures when the output would be unusable."""

import glob
import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline

from vtcaps_pipeline.beam import preprocess
from tests.face import fixtures as fx
from vtcaps_tf.cli import main as vtcaps
from vtcaps_tf.cli import preprocess as preprocess_cli
from vtcaps_tf.data import dataset, features
from vtcaps_tf.data.contract import InputContract

N, M, S = 4, 8, 32
ARGS = ["--clip-frames", str(N), "--long-frames", str(M), "--image-size", str(S), "--no-progress"]


def _run(source, root, out, *extra):
    options, beam_args = preprocess_cli.parse(["--source", source, "--input", root, "--output", out,
                                               *ARGS, *extra])
    return preprocess.run(options, beam_args,
                          test_pipeline=test_pipeline.TestPipeline(runner=FnApiRunner()))


def _dead_letters(out):
    lines = []
    for path in glob.glob(os.path.join(out, "dead_letter-*.jsonl")):
        with open(path) as f:
            lines += [json.loads(line) for line in f if line.strip()]
    return lines


def _records(out, split):
    """The context of every clip of a split."""
    return [context for context, _ in features.read_clips(features.split_files(out, split))]


@pytest.fixture(scope="module")
def folder_job(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("videos"))
    out = str(tmp_path_factory.mktemp("out"))
    # 4 subjects x 2 classes of good 8-frame videos (2 clips each), plus every kind of bad input.
    good = fx.write_folder_dataset(root, classes=("happy", "sad"), subjects=("s1", "s2", "s3", "s4"))
    bad = fx.write_bad_files(os.path.join(root, "happy"))
    bad["truncated"] = fx.write_truncated_video(os.path.join(root, "sad", "s1_trunc.avi"))
    bad["no_face"] = fx.write_noface_video(os.path.join(root, "sad", "s2_grey.avi"))
    os.makedirs(os.path.join(root, "angry"))  # a class folder with no videos
    stats = _run("folder", root, out, "--split-ratios", "0.5,0.25,0.25", "--seed", "1")
    return root, out, good, bad, stats


def test_every_video_is_written_or_dead_lettered(folder_job):
    root, out, good, bad, stats = folder_job
    letters = _dead_letters(out)
    assert sorted((d["path"], d["reason"]) for d in letters) == sorted((p, r) for r, p in bad.items())
    written = set()
    for split in features.SPLITS:
        written |= {c["video_id"].numpy().decode() for c in _records(out, split)}
    assert written == {os.path.relpath(p, root) for p in good}
    assert len(written) + len(letters) == len(good) + len(bad)
    assert stats["videos"] == {"listed": 12, "written": 8, "dead_letters": 4}
    assert stats["dead_letters"] == {"empty_file": 1, "unreadable": 1, "truncated": 1, "no_face": 1}
    assert stats["counters"]["clips_written"] == 16 and stats["counters"]["dead_letters"] == 4
    assert stats["counters"]["videos_read"] == 9  # the 8 good and the faceless one decode
    assert stats["empty_classes"] == ["angry"]


def test_outputs_read_back_through_vtcaps_data(folder_job):
    _, out, _, _, stats = folder_job
    meta = features.read_metadata(out)
    assert meta["classes"] == ["angry", "happy", "sad"]
    assert (meta["clip_frames"], meta["long_frames"], meta["image_size"]) == (N, M, S)
    for key in ("schema_version", "source", "counts", "seed", "split_ratios"):
        assert key in meta
    assert meta["schema_version"] == 3 and "au_size" not in meta  # the model draws its AU maps
    assert sum(meta["counts"].values()) == 16 and meta["counts"]["train"] > 0
    ds = dataset.read_split(out, "train", InputContract(N, M, S))
    n = 0
    for inputs, label in ds:
        n += 1
        assert inputs["frames"].shape == (N, S, S, 3) and inputs["frames"].dtype == tf.uint8
        assert inputs["long_frames"].shape == (M, S, S, 3)
        assert inputs["landmarks"].shape == (N, 68, 2)
        assert 0.0 <= float(tf.reduce_min(inputs["landmarks"])) and float(tf.reduce_max(inputs["landmarks"])) <= 1.0
        assert int(label) in (1, 2)
    assert n == meta["counts"]["train"]
    assert os.path.exists(os.path.join(out, "stats.json"))


def test_splits_are_by_subject_and_follow_the_ratios(folder_job):
    _, out, _, _, stats = folder_job
    subjects = {s: {c["subject_id"].numpy().decode() for c in _records(out, s)} for s in features.SPLITS}
    # Subjects listed: s1..s4 and "bad" (bad_empty.avi, bad_text.avi). 5 x (0.5, 0.25, 0.25) =
    # 2.5 / 1.25 / 1.25 -> 2 / 1 / 1, the spare one to train (largest remainder): 3 / 1 / 1,
    # taken in the order of sha256("1:<subject>") (seed 1).
    order = sorted(["s1", "s2", "s3", "s4", "bad"],
                   key=lambda s: hashlib.sha256(f"1:{s}".encode()).hexdigest())
    expected = {"train": set(order[:3]), "val": {order[3]}, "test": {order[4]}}
    for split in features.SPLITS:
        assert subjects[split] == expected[split] - {"bad"}  # "bad" has no clip anywhere
    assert stats["check"]["passed"]


@pytest.mark.slow
def test_same_seed_same_output(folder_job, tmp_path):
    root, out, *_ = folder_job
    _run("folder", root, str(tmp_path), "--split-ratios", "0.5,0.25,0.25", "--seed", "1")
    for split in features.SPLITS:
        a = sorted((c["video_id"].numpy(), int(c["clip_index"])) for c in _records(out, split))
        b = sorted((c["video_id"].numpy(), int(c["clip_index"])) for c in _records(str(tmp_path), split))
        assert a == b


def test_synthetic_source_end_to_end(tmp_path):
    root = str(tmp_path / "synth")
    fx.write_synthetic_dataset(root, classes=("neutral", "smile"), subjects=("a", "b", "c"))
    out = str(tmp_path / "out")
    stats = _run("synthetic", root, out, "--split-ratios", "0.34,0.33,0.33")
    meta = features.read_metadata(out)
    assert meta["classes"] == ["neutral", "smile"] and meta["source"] == "synthetic"
    assert meta["counts"] == {"train": 4, "val": 4, "test": 4}  # 3 subjects -> one per split
    assert stats["videos"]["dead_letters"] == 0


def test_empty_train_split_fails_clearly(tmp_path, capsys):
    root = str(tmp_path / "bad")
    fx.write_bad_files(os.path.join(root, "happy"))
    fx.write_noface_video(os.path.join(root, "sad", "x_1.avi"))
    out = str(tmp_path / "out")
    with pytest.raises(preprocess.PreprocessError, match="train split is empty"):
        _run("folder", root, out)
    assert not os.path.exists(os.path.join(out, "metadata.json"))  # unusable output: no metadata
    stats = json.load(open(os.path.join(out, "stats.json")))
    assert not stats["check"]["passed"] and len(_dead_letters(out)) == 3


def test_validate_counts_dead_letters_against_the_videos_listed_when_the_runner_reports_no_metrics(
        tmp_path, monkeypatch):
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from vtcaps_pipeline.orchestration import runner

    def no_metrics(self):
        raise NotImplementedError("this runner reports no metrics")

    monkeypatch.setattr(fn_runner.RunnerResult, "metrics", no_metrics)
    root = str(tmp_path / "videos")
    fx.write_folder_dataset(root, classes=("happy", "sad"), subjects=("s1", "s2", "s3"))  # 6 good
    fx.write_bad_files(os.path.join(root, "happy"))  # 2 files no decoder opens: listed, never read
    out = str(tmp_path / "out")
    # Seed 1 orders the subjects bad, s3, s2, s1: train s3 (and bad), val s2, test s1.
    stats = _run("folder", root, out, "--split-ratios", "0.34,0.33,0.33", "--seed", "1")
    assert stats["counters"] is None  # the runner reported none
    assert stats["videos"] == {"listed": 8, "written": 6, "dead_letters": 2}

    results = {"ExampleGen": {"examples": out}}

    def step(name, config, fn):
        os.makedirs(tmp_path / name, exist_ok=True)
        return fn(runner.StepContext(name, config, {}, str(tmp_path / name), results, runner.Stages()))

    results["Statistics"] = step("Statistics", {}, runner.run_statistics)
    # 2 dead letters of 8 videos listed = 25%, however many the runner read (none reported).
    with pytest.raises(ValueError, match=r"2 of 8 videos gave no clip \(limit 20%\)"):
        step("Validate", {"max_dead_letter_fraction": 0.2}, runner.run_validate)
    assert step("Validate", {"max_dead_letter_fraction": 0.25}, runner.run_validate) == {"problems": 0}


def test_cli_exit_codes(tmp_path, capsys):
    empty = tmp_path / "empty"
    os.makedirs(empty / "happy")
    code = vtcaps.main(["preprocess", "--source", "folder", "--input", str(empty), "--output",
                        str(tmp_path / "o"), *ARGS])
    assert code == 2  # bad input (vtcaps_tf.errors)
    assert "no class" in capsys.readouterr().err
    code = vtcaps.main(["preprocess", "--source", "folder", "--input", str(empty), "--output",
                        str(tmp_path / "o"), "--split-ratios", "1,2", *ARGS])
    assert code == 2 and "split ratios" in capsys.readouterr().err


def test_default_runner_is_multithreading_fnapi():
    from apache_beam.options.pipeline_options import DirectOptions

    p = preprocess.make_pipeline([])
    assert type(p.runner).__name__ == "FnApiRunner"
    direct = p.options.view_as(DirectOptions)
    assert direct.direct_running_mode == "multi_threading"
    assert direct.direct_num_workers == (os.cpu_count() or 1)
    p = preprocess.make_pipeline(["--direct_num_workers", "3", "--direct_running_mode", "in_memory"])
    assert p.options.view_as(DirectOptions).direct_num_workers == 3
    assert p.options.view_as(DirectOptions).direct_running_mode == "in_memory"


def test_progress_display_counts_markers(tmp_path, capsys):
    markers = tmp_path / "m"
    os.makedirs(markers)
    with preprocess.ProgressDisplay(str(markers), total=4, every_s=0.05):
        for k in range(3):
            (markers / str(k)).touch()
    err = capsys.readouterr().err
    assert "3/4 videos done (75%" in err.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["multi_threading", "multi_processing"])
def test_two_worker_runner_end_to_end(tmp_path, mode):
    root = str(tmp_path / "v")
    fx.write_folder_dataset(root, classes=("happy", "sad"), subjects=("s1", "s2", "s3"))
    out = str(tmp_path / "out")
    code = vtcaps.main(["preprocess", "--source", "folder", "--input", root, "--output", out, *ARGS,
                        "--direct_num_workers", "2", "--direct_running_mode", mode])
    assert code == 0
    meta = features.read_metadata(out)
    assert sum(meta["counts"].values()) == 12
    assert np.sum([len(_records(out, s)) for s in features.SPLITS]) == 12


@pytest.mark.slow
def test_afew_keeps_its_val_set_as_test(tmp_path):
    root = str(tmp_path / "afew")
    fx.write_afew_dataset(root, train=(("Happy", 2), ("Sad", 2)), val=(("Happy", 1),))
    out = str(tmp_path / "out")
    stats = _run("afew", root, out)
    meta = features.read_metadata(out)
    assert meta["classes"] == ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
    test_videos = {c["video_id"].numpy().decode() for c in _records(out, "test")}
    assert test_videos == {"Val_AFEW/Happy/0000000.avi"}
    # 4 Train clips (one subject each) over train/val at 0.7/0.15 -> 3 / 1.
    assert stats["splits"]["train"]["videos"] == 3 and stats["splits"]["val"]["videos"] == 1


def test_ckplus_with_unlabelled_sequence(tmp_path):
    root = str(tmp_path / "ck")
    fx.write_ckplus_dataset(root, [("S005", "001", 1), ("S010", "002", 7), ("S011", "001", None)], frames=4)
    out = str(tmp_path / "out")
    stats = _run("ckplus", root, out, "--clip-frames", "4", "--long-frames", "4")
    assert stats["dead_letters"] == {"no_label": 1}  # CK+'s unlabelled sequence, counted
    [letter] = _dead_letters(out)
    assert letter["path"].endswith(os.path.join("S011", "001"))
    names = {c["label_name"].numpy().decode() for s in features.SPLITS for c in _records(out, s)}
    assert names == {"anger", "surprise"}


def _write_shard(path, examples):
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for ex in examples:
            w.write(ex.SerializeToString())


def _clip(frames, label=0, name="a", subject="s1"):
    rgb = np.zeros((S, S, 3), np.uint8)
    return features.Clip(video_id="v", subject_id=subject, label=label, label_name=name, clip_index=0,
                         clip_frames=N, clip_offset=0, fps=10.0, source="folder",
                         frames_jpeg=[features.encode_jpeg(rgb)] * frames,
                         landmarks=np.full((frames, 68, 2), 0.5),
                         image_size=S).to_example()


def test_schema_check_catches_what_the_reader_cannot_use(tmp_path):
    from vtcaps_pipeline.beam import checks

    out = str(tmp_path)
    # A clip reaching past its record's 8 stored frames (4 frames from 6), and a record with two
    # start times for its one clip.
    past_end, two_times = _clip(M), _clip(6)
    past_end.context.feature["clip_offset"].int64_list.value[0] = 6
    two_times.context.feature["start_time"].float_list.value.append(1.0)
    _write_shard(os.path.join(out, "train-00000-of-00001.tfrecord.gz"), [_clip(M), past_end, two_times])
    _write_shard(os.path.join(out, "val-00000-of-00001.tfrecord.gz"), [_clip(M, label=1, name="a")])
    _write_shard(os.path.join(out, "test-00000-of-00001.tfrecord.gz"), [_clip(M, subject="s1")])
    with pytest.raises(checks.ValidationError) as err:
        checks.validate(out, ["a", "b"], N, M, S)
    text = str(err.value)
    assert "train: 2 clips lie outside their record's stored frames, or lack their index or times" in text
    assert "label ids [1]" in text  # "a" is class 0
    assert "subject 's1' is in both" in text
    # A record without the context features the reader needs.
    bare = tf.train.SequenceExample()
    bare.context.feature["video_id"].bytes_list.value.append(b"v")
    _write_shard(os.path.join(out, "train-00000-of-00001.tfrecord.gz"), [bare])
    with pytest.raises(checks.ValidationError, match="do not parse with the reader's spec"):
        checks.validate(out, ["a", "b"], N, M, S)
