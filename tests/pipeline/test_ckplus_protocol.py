"""CK+ as it really comes: grey PNG onset-to-peak sequences of 10, 12 and 14 frames (shorter than a
16-frame clip) and one of 20, an unlabelled sequence, shipped landmarks on some; preprocessed into
K folds. Every labelled sequence is in the records with its peak frame inside a clip."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline

from vtcaps_pipeline.beam import preprocess
from vtcaps_pipeline.beam import sources
from tests.face import fixtures as fx
from tests.pipeline.ckplus_fixture import PEAK_BRIGHTENING, SEQUENCES, write_ckplus
from vtcaps_tf.cli.preprocess import parse
from vtcaps_tf.data import features
from vtcaps_tf.errors import UsageError

CLIP = 16  # the small preset's clip length: longer than three of the sequences
WIDTH = 120


@pytest.fixture(scope="module")
def ckplus_job(tmp_path_factory):
    from vtcaps_tf.face import FaceMesh, landmarks68

    with FaceMesh(video=False) as mesh:
        template = landmarks68(mesh.detect(fx.face_image(WIDTH)))
    root = str(tmp_path_factory.mktemp("ckplus"))
    out = str(tmp_path_factory.mktemp("ck_out"))
    lengths = write_ckplus(root, template=template, width=WIDTH)
    argv = ["--source", "ckplus", "--input", root, "--output", out, "--preset", "small",
            "--image-size", "32", "--folds", "2", "--seed", "3", "--no-progress"]
    stats = preprocess.run(*parse(argv), test_pipeline=test_pipeline.TestPipeline(runner=FnApiRunner()))
    return root, out, lengths, stats


def _clips(out):
    meta = features.read_metadata(out)
    clips = []
    for split in features.data_splits(meta):
        files = features.split_files(out, split)
        for context, sequence in features.read_clips(files):
            clips.append((split, context, sequence))
    return meta, clips


def test_fixture_is_like_ckplus(ckplus_job):
    root, _, lengths, _ = ckplus_job
    items = {i.video_id: i for i in sources.discover("ckplus", root).items}
    assert {v: len(i.frame_files) for v, i in items.items()} == lengths
    assert items["S011/002"].landmark_files and items["S013/004"].landmark_files
    assert items["S010/001"].landmark_files is None
    png = sorted(glob.glob(os.path.join(root, "cohn-kanade-images", "S010", "001", "*.png")))[0]
    import cv2

    assert cv2.imread(png, cv2.IMREAD_UNCHANGED).ndim == 2  # grey PNG, as CK+ ships them


def test_every_labelled_sequence_is_in_the_records_and_the_unlabelled_one_is_a_dead_letter(ckplus_job):
    _, out, lengths, stats = ckplus_job
    meta, clips = _clips(out)
    labelled = {f"{s}/{q}" for s, q, _, code, _ in SEQUENCES if code is not None}
    assert {c["video_id"].numpy().decode() for _, c, _ in clips} == labelled
    letters = [json.loads(line) for p in glob.glob(os.path.join(out, "dead_letter-*.jsonl"))
               for line in open(p) if line.strip()]
    assert [(os.path.relpath(d["path"], os.path.join(ckplus_job[0], "cohn-kanade-images")),
             d["reason"]) for d in letters] == [(os.path.join("S014", "001"), "no_label")]
    assert stats["dead_letters"] == {"no_label": 1} and stats["videos"]["written"] == 4
    # Three sequences shorter than a clip, brought to length by CK+'s default policy, counted.
    assert stats["temporal"] == {"short_policy": "pad_first", "clip_labels": "near_peak",
                                 "short_sequences": 3, "clips_not_near_peak": 0}
    assert meta["short_policy"] == "pad_first" and meta["clip_frames"] == CLIP


def test_each_sequence_last_frame_is_in_a_clip(ckplus_job):
    _, out, lengths, _ = ckplus_job
    _, clips = _clips(out)
    peak_seen = {}
    for _, context, sequence in clips:
        vid = context["video_id"].numpy().decode()
        offset = int(context["clip_offset"].numpy())
        assert int(context["clip_frames"].numpy()) == CLIP
        short = sequence["frames"].numpy()[offset:offset + CLIP]
        grey = np.array([tf.io.decode_jpeg(j).numpy().mean() for j in short])
        # The peak frame was brightened: in the clip that holds it, its crop stands out.
        bright = grey > np.median(grey) + PEAK_BRIGHTENING / 3
        end_frame = int(round(float(context["end_time"].numpy()) * float(context["fps"].numpy())))
        peak_seen[vid] = peak_seen.get(vid, False) or bool(bright[-1] and end_frame == lengths[vid])
    assert peak_seen == {v: True for v in peak_seen} and len(peak_seen) == 4


def test_subjects_are_partitioned_into_folds_recorded_in_records_and_metadata(ckplus_job):
    _, out, _, stats = ckplus_job
    meta, clips = _clips(out)
    assert meta["folds"] == 2 and meta["splits"] == ["fold00", "fold01"]
    fold_of = meta["fold_of_subject"]
    assert sorted(fold_of) == ["S010", "S011", "S012", "S013"]  # S014 has no labelled sequence
    per_fold = {0: 0, 1: 0}
    for split, context, _ in clips:
        subject = context["subject_id"].numpy().decode()
        assert int(context["fold"].numpy()) == fold_of[subject] == features.fold_index(split)
        per_fold[fold_of[subject]] += 1
    # Balanced by clips: S013 gives 2 clips (20 frames), the others 1: 5 clips split 3 / 2.
    assert sorted(per_fold.values()) == [2, 3]
    assert {s: stats["splits"][s]["clips"] for s in meta["splits"]} == {
        features.fold_split(k): n for k, n in per_fold.items()}


def test_folds_are_refused_where_the_source_fixes_the_split(tmp_path):
    root = str(tmp_path / "afew")
    fx.write_afew_dataset(root, train=(("Happy", 2),), val=(("Happy", 1),))
    with pytest.raises(UsageError, match="fixes its own split"):  # bad input: exit status 2
        preprocess.run(*parse(["--source", "afew", "--input", root, "--output", str(tmp_path / "o"),
                               "--folds", "2", "--no-progress"]))
