"""K-fold cross-validation: the fold plan, the summary (checked against numpy on hand-made fold
reports), and the whole command on a tiny fold dataset: folds partition the subjects, each video
is tested exactly once, a preempted run and a killed one resume, the mean is the mean of the folds."""

import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.data.fixtures import synthetic_clip
from tests.train.test_preemption import saved_position
from vtcaps_pipeline.beam.sources.base import assign_folds
from vtcaps_tf.cli import crossval as crossval_cli
from vtcaps_tf.config.augment import AugmentConfig
from vtcaps_tf.config.options import from_args
from vtcaps_tf.config.train_options import CrossvalOptions
from vtcaps_tf.data import features
from vtcaps_tf.errors import EXIT_PREEMPTED, UsageError
from vtcaps_tf.evaluation import evaluate
from vtcaps_tf.train import crossval, setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fold_plan_keeps_validation_out_of_the_test_fold():
    plan = crossval.fold_plan(4, val_folds=1)
    assert [p["test"] for p in plan] == [[0], [1], [2], [3]]
    assert [p["val"] for p in plan] == [[1], [2], [3], [0]]
    assert plan[3]["train"] == [1, 2]
    for p in crossval.fold_plan(5, val_folds=2):
        assert sorted(p["test"] + p["val"] + p["train"]) == list(range(5))
    with pytest.raises(crossval.CrossvalError):
        crossval.fold_plan(3, val_folds=2)  # nothing left to train on
    with pytest.raises(crossval.CrossvalError):
        crossval.fold_plan(1)


def _fold_report(labels, pred, video_ids, classes):
    probs = np.eye(len(classes))[pred] * 0.8 + 0.1
    return evaluate.build_report(np.array(labels), probs, classes, video_ids=video_ids)


def test_summary_mean_std_and_summed_confusion():
    classes = ["a", "b"]
    # Fold 0: 4 clips of 2 videos, 3 right; both videos right (mean probabilities).
    r0 = _fold_report([0, 0, 1, 1], [0, 1, 1, 1], ["v1", "v1", "v2", "v2"], classes)
    # Fold 1: 3 clips of 3 videos, 1 right.
    r1 = _fold_report([0, 1, 1], [1, 1, 0], ["v3", "v4", "v5"], classes)
    s = crossval.summarize([r0, r1], classes)
    assert [f["num_clips"] for f in s["folds"]] == [4, 3]
    assert [f["num_videos"] for f in s["folds"]] == [2, 3]
    assert s["mean"]["clip_accuracy"] == pytest.approx(np.mean([3 / 4, 1 / 3]))
    assert s["std"]["clip_accuracy"] == pytest.approx(np.std([3 / 4, 1 / 3]))
    # v1's clips: [.9,.1] and [.1,.9] -> a tie, argmax takes class 0, which is right.
    assert s["mean"]["video_accuracy"] == pytest.approx(np.mean([1.0, 1 / 3]))
    assert s["confusion_matrix"] == [[1, 2], [1, 3]]  # [[1,1],[0,2]] + [[0,1],[1,1]]
    assert s["per_class"]["b"]["recall"] == pytest.approx(3 / 4)
    with pytest.raises(crossval.CrossvalError, match="label sets"):
        crossval.summarize([r0, _fold_report([0], [0], ["v"], ["a", "c"])], classes)
    md = crossval.report_markdown(s, "ckplus", "t")
    assert "| 3D-CapsNet (paper, Table 2) | 96.26 |" in md
    assert f"| this run, clip level | {100 * np.mean([3 / 4, 1 / 3]):.2f} ± " in md


def test_pooled_figures_average_over_the_classes_present_in_the_pooled_labels():
    classes = ["a", "b", "c"]  # no fold holds a clip of c
    r0 = _fold_report([0, 0, 1, 1], [0, 1, 1, 1], ["v1", "v1", "v2", "v2"], classes)
    r1 = _fold_report([0, 1, 1], [1, 1, 0], ["v3", "v4", "v5"], classes)
    s = crossval.summarize([r0, r1], classes)
    # Clips, summed by hand: cm [[1,2,0],[1,3,0],[0,0,0]]; P a 1/2, b 3/5; R a 1/3, b 3/4;
    # F1 a 2/5, b 2/3. Over a and b: UAR 13/24, macro F1 8/15 (over all three: 16/45).
    clip = s["pooled"]["clip"]
    assert s["confusion_matrix"] == [[1, 2, 0], [1, 3, 0], [0, 0, 0]]
    assert clip["absent_classes"] == ["c"]
    assert clip["accuracy"] == pytest.approx(4 / 7) and clip["num_samples"] == 7
    assert clip["uar"] == pytest.approx(13 / 24) and clip["macro_recall"] == pytest.approx(13 / 24)
    assert clip["macro_precision"] == pytest.approx((1 / 2 + 3 / 5) / 2)
    assert clip["macro_f1"] == pytest.approx(8 / 15)
    # Videos (mean probabilities; v1's tie goes to a): v1 a->a, v2 b->b, v3 a->b, v4 b->b, v5 b->a:
    # cm [[1,1,0],[1,2,0],[0,0,0]]; P = R = F1: a 1/2, b 2/3 -> 7/12.
    video = s["pooled"]["video"]
    assert s["video_confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert video["absent_classes"] == ["c"]
    assert video["macro_f1"] == pytest.approx(7 / 12) and video["uar"] == pytest.approx(7 / 12)
    assert video["accuracy"] == pytest.approx(3 / 5)


# ---- the command on a tiny fold dataset ---------------------------------------------------------

NUM_CLASSES, K = 3, 3
SUBJECTS = [f"p{i}" for i in range(6)]


def write_fold_dataset(root: str) -> dict:
    """6 subjects x 2 videos (one 2-clip, one 1-clip) of 3 learnable classes, in 3 folds assigned
    by `assign_folds` as `preprocess --folds 3` does; returns the fold of every subject."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    clips = {s: 3 for s in SUBJECTS}
    fold_of = assign_folds(clips, K, seed=1)
    writers = {k: tf.io.TFRecordWriter(
        os.path.join(root, f"{features.fold_split(k)}-00000-of-00001{features.SHARD_SUFFIX}"),
        tf.io.TFRecordOptions(compression_type="GZIP")) for k in range(K)}
    counts, videos = dict.fromkeys(map(features.fold_split, range(K)), 0), {}
    for i, subject in enumerate(SUBJECTS):
        for v, n_clips in enumerate((2, 1)):
            label = (i + v) % NUM_CLASSES
            for c in range(n_clips):
                clip = synthetic_clip(label, NUM_CLASSES, 16, 8, 32, rng,
                                      video_id=f"{subject}/{v}", subject_id=subject)
                clip.clip_index, clip.fold = c, fold_of[subject]
                writers[fold_of[subject]].write(clip.to_example().SerializeToString())
                counts[features.fold_split(fold_of[subject])] += 1
    for w in writers.values():
        w.close()
    meta = {"schema_version": features.SCHEMA_VERSION,
            "classes": [f"class_{k}" for k in range(NUM_CLASSES)], "clip_frames": 8,
            "long_frames": 16, "image_size": 32,
            "source": "synthetic", "counts": counts, "seed": 1, "folds": K,
            "splits": [features.fold_split(k) for k in range(K)], "fold_of_subject": fold_of}
    with open(os.path.join(root, features.METADATA_FILE), "w") as f:
        json.dump(meta, f)
    return fold_of


def _crossval_argv(data, out):
    return ["crossval", "--data", data, "--output", out, "--preset", "tiny", "--epochs", "1",
            "--batch-size", "2", "--no-augment", "--verbose", "0"]


@pytest.mark.slow
def test_crossval_partitions_tests_each_video_once_and_resumes(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "cv")
    fold_of = write_fold_dataset(data)
    assert sorted(set(fold_of.values())) == [0, 1, 2]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)

    # Preempted (SIGTERM) after fold 0's first optimizer step of 3: it saves that step and exits
    # with EXIT_PREEMPTED, no fold report written.
    preempted = subprocess.run([sys.executable, "-m", "tests.crashing_vtcaps", "--sigterm-at-step", "1",
                                *_crossval_argv(data, out)], cwd=REPO, capture_output=True, text=True,
                               env=env, timeout=900)
    assert preempted.returncode == EXIT_PREEMPTED, preempted.stderr[-3000:]
    assert "vtcaps crossval: preempted: SIGTERM: saved the checkpoint" in preempted.stderr
    assert saved_position(os.path.join(out, "fold00", "run")) == (0, 1, 1)
    assert not os.path.exists(os.path.join(out, "fold00", "report.json"))

    # Resumed, then killed (SIGKILL, by the test's wrapper) right after fold 0's first epoch was
    # checkpointed, before its report.
    first = subprocess.run([sys.executable, "-m", "tests.crashing_vtcaps", "--after-epoch", "1",
                            *_crossval_argv(data, out)], cwd=REPO, capture_output=True, text=True,
                           env=env, timeout=900)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert glob.glob(os.path.join(out, "fold00", "run", "checkpoints", "*"))
    assert not os.path.exists(os.path.join(out, "fold00", "report.json"))

    second = subprocess.run([sys.executable, "-m", "vtcaps_tf.cli.main", *_crossval_argv(data, out)],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    # Fold 0 resumed from its checkpoint: its single epoch is not trained again.
    with open(os.path.join(out, "fold00", "run", "logs", "history.csv")) as f:
        assert len([line for line in f if line.strip()]) == 2  # header + epoch 1
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)

    folds = []
    for k in range(K):
        with open(os.path.join(out, features.fold_split(k), "report.json")) as f:
            folds.append(json.load(f))
        assert os.path.isdir(os.path.join(out, features.fold_split(k), "run", "logs", "validation"))
    # The folds partition the subjects; a fold's test subjects are exactly those of its shard.
    tested_subjects = [s for r in folds for s in r["test_subjects"]]
    assert sorted(tested_subjects) == SUBJECTS
    for k, r in enumerate(folds):
        assert r["test_subjects"] == sorted(s for s, f in fold_of.items() if f == k)
        assert features.fold_split(k) not in r["train"] + r["val"]
    # Each of the 12 videos is tested exactly once.
    tested = [v for r in folds for v in r["video_ids"]]
    assert sorted(tested) == sorted(f"{s}/{v}" for s in SUBJECTS for v in (0, 1))
    assert sum(r["num_videos"] for r in folds) == 12 and sum(r["num_samples"] for r in folds) == 18
    # The mean and std are those of the per-fold figures (numpy on the fold reports).
    clip_acc = [r["accuracy"] for r in folds]
    video_acc = [r["video"]["accuracy"] for r in folds]
    assert report["mean"]["clip_accuracy"] == pytest.approx(np.mean(clip_acc))
    assert report["mean"]["video_accuracy"] == pytest.approx(np.mean(video_acc))
    assert report["std"]["video_uar"] == pytest.approx(np.std([r["video"]["uar"] for r in folds]))
    assert report["mean"]["clip_macro_f1"] == pytest.approx(np.mean([r["macro_f1"] for r in folds]))
    assert np.sum(report["confusion_matrix"]) == 18 and np.sum(report["video_confusion_matrix"]) == 12
    for name in ("report.md", "confusion_matrix.png", "confusion_matrix_video.png"):
        assert os.path.exists(os.path.join(out, name))

    # A rerun (in this process: nothing to train) skips the finished folds and reports the same.
    said = []
    options = CrossvalOptions(data_dir=data, output=out, preset="tiny", epochs=1, batch_size=2,
                              learning_rate=1e-3, augment=AugmentConfig.none(), seed=0)
    again = crossval.crossval(options, log=said.append)
    assert sum("finished earlier, skipped" in line for line in said) == K
    assert again["mean"] == report["mean"]
    with pytest.raises(crossval.CrossvalError, match=r"other settings \(epochs\)"):
        crossval.crossval(CrossvalOptions(data_dir=data, output=out, preset="tiny", epochs=2,
                                          batch_size=2, augment=False))


def _options(*flags):
    return from_args(CrossvalOptions, crossval_cli.build_parser().parse_args(
        ["--data", "d", "--output", "o", *flags]))


def test_crossval_ablation_flags_reach_the_fold_config():
    from tests.train.test_training import ABLATION_FLAGS

    config = _options("--preset", "tiny", "--no-tpn", *ABLATION_FLAGS).fold_config("r")
    model = setup.compiled_model(config, {"classes": ["a", "b"]}, steps_per_epoch=1)
    c = model.config
    assert (c.use_tpn, c.use_au_attention, c.use_nonlocal, c.use_capsules) == (False, False, False, False)
    assert (c.flow, c.fusion, c.tpn_levels, c.matching_weight) == ("cascade", "softmax", (2, 3, 4), 0.25)
    assert c.tpn_pool == "mean"
    # Without flags nothing changes the preset's model.
    assert _options().fold_config("r").model_settings() == {}


def test_crossval_of_a_data_dir_without_folds_is_bad_input(tmp_path):
    from tests.data.fixtures import write_dataset

    data = write_dataset(str(tmp_path / "d"), counts={"train": 1})
    with pytest.raises(crossval.CrossvalError, match="not folds") as err:
        crossval.crossval(CrossvalOptions(data_dir=data, output=str(tmp_path / "cv"), preset="tiny"))
    assert isinstance(err.value, UsageError)  # exit status 2


def test_settings_left_at_their_defaults_do_not_block_a_resume():
    spelled_out = {"preset": "tiny", "epochs": 2, "lr_schedule": "constant", "learning_rate": 1e-3,
                   "use_tpn": True, "val_folds": 1}
    omitted = {"preset": "tiny", "epochs": 2, "learning_rate": 1e-3, "val_folds": 1}
    assert crossval._without_defaults(spelled_out) == crossval._without_defaults(omitted)
    changed = dict(spelled_out, lr_schedule="cosine")
    assert crossval._without_defaults(changed) != crossval._without_defaults(omitted)
