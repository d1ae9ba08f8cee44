"""Sources: what each dataset layout lists, and the subject split."""

import hashlib
import json
import logging
import os

import numpy as np
import pytest

from vtcaps_pipeline.beam import sources
from vtcaps_pipeline.beam.sources import base
from vtcaps_pipeline.beam.sources.base import SourceError, allocate, assign_splits, parse_ratios, split_plan


def _touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---- folder ------------------------------------------------------------------------------------

def test_folder_lists_classes_subjects_and_reports_odd_files(tmp_path, caplog):
    root = str(tmp_path)
    _touch(f"{root}/happy/S010_001.avi")
    _touch(f"{root}/happy/S011_002.MP4")
    _touch(f"{root}/happy/readme.txt")
    _touch(f"{root}/sad/S010_003.mkv")
    _touch(f"{root}/sad/S012_frames/0001.png")  # a folder of frames is a video
    os.makedirs(f"{root}/angry")  # empty class folder
    with caplog.at_level(logging.WARNING):
        d = sources.discover("folder", root)
    assert d.classes == ["angry", "happy", "sad"]
    assert {(i.video_id, i.subject, i.label_name) for i in d.items} == {
        ("happy/S010_001.avi", "S010", "happy"), ("happy/S011_002.MP4", "S011", "happy"),
        ("sad/S010_003.mkv", "S010", "sad"), ("sad/S012_frames", "S012", "sad")}
    assert d.empty_classes == ["angry"] and d.ignored_files == ["happy/readme.txt"]
    assert "'angry' has no videos" in caplog.text


def test_folder_subjects_csv_overrides(tmp_path):
    root = str(tmp_path)
    _touch(f"{root}/a/clip1.avi")
    _touch(f"{root}/a/clip2.avi")
    (tmp_path / "subjects.csv").write_text("path,subject\na/clip1.avi,alice\n")
    subjects = {i.video_id: i.subject for i in sources.discover("folder", root).items}
    assert subjects == {"a/clip1.avi": "alice", "a/clip2.avi": "clip2"}


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="not a directory"):
        sources.discover("folder", str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="no class folders"):
        sources.discover("folder", str(tmp_path))
    os.makedirs(tmp_path / "happy")
    os.makedirs(tmp_path / "sad")
    with pytest.raises(SourceError, match="no class .* holds any video"):
        sources.discover("folder", str(tmp_path))
    with pytest.raises(SourceError, match="unknown source"):
        sources.discover("kinetics", str(tmp_path))


# ---- synthetic ---------------------------------------------------------------------------------

def test_synthetic_reads_the_manifest(tmp_path):
    root = str(tmp_path)
    for rel in ("smile/p1_0.avi", "neutral/p2_0.avi", "neutral/stray_9.avi"):
        _touch(f"{root}/{rel}")
    manifest = {"classes": ["smile", "neutral", "frown"], "fps": 10, "frames": 8, "size": 64,
                "tempo_only": False, "seed": 1, "videos": [
                    {"path": "smile/p1_0.avi", "label": "smile", "subject": "p1"},
                    {"path": "neutral/p2_0.avi", "label": "neutral", "subject": "p2"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    d = sources.discover("synthetic", root)
    assert d.classes == ["smile", "neutral", "frown"]  # manifest order, not sorted
    assert [(i.video_id, i.subject, i.label_name) for i in d.items] == [
        ("smile/p1_0.avi", "p1", "smile"), ("neutral/p2_0.avi", "p2", "neutral")]
    assert d.empty_classes == ["frown"] and d.ignored_files == ["neutral/stray_9.avi"]
    os.remove(tmp_path / "manifest.json")
    with pytest.raises(SourceError, match="manifest.json"):
        sources.discover("synthetic", root)


# ---- CK+ ---------------------------------------------------------------------------------------

def test_ckplus_labels_landmarks_and_unlabelled(tmp_path):
    root = str(tmp_path)
    for subj, seq, n in (("S005", "001", 3), ("S010", "002", 2), ("S010", "004", 2), ("S011", "001", 2)):
        for t in range(1, n + 1):
            _touch(f"{root}/cohn-kanade-images/{subj}/{seq}/{subj}_{seq}_{t:08d}.png")
    _touch(f"{root}/Emotion/S005/001/S005_001_00000003_emotion.txt", b"   3.0000000e+00\n")
    _touch(f"{root}/Emotion/S011/001/S011_001_00000002_emotion.txt", b"   0.0000000e+00\n")
    for t in (1, 2):  # every frame of S010/002 has landmarks
        _touch(f"{root}/Landmarks/S010/002/S010_002_{t:08d}_landmarks.txt", b"1 2\n")
    _touch(f"{root}/Emotion/S010/002/S010_002_00000002_emotion.txt", b"7.0\n")
    d = sources.discover("ckplus", root)
    assert d.classes == ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
    items = {i.video_id: i for i in d.items}
    assert items["S005/001"].label_name == "disgust" and items["S005/001"].dead_reason is None
    assert items["S005/001"].subject == "S005" and len(items["S005/001"].frame_files) == 3
    assert items["S005/001"].landmark_files is None  # none shipped: MediaPipe is used
    assert items["S010/002"].label_name == "surprise" and len(items["S010/002"].landmark_files) == 2
    assert items["S010/004"].dead_reason == "no_label"  # CK+ gives no emotion for it
    assert items["S011/001"].dead_reason == "unknown_label"  # code 0 is not one of the 7 classes


# ---- AFEW --------------------------------------------------------------------------------------

def test_afew_classes_and_official_split(tmp_path):
    root = str(tmp_path)
    _touch(f"{root}/Train_AFEW/Happy/000123.avi")
    _touch(f"{root}/Train_AFEW/Angry/000124.avi")
    _touch(f"{root}/Train_AFEW/Contempt/000125.avi")  # not an AFEW class
    _touch(f"{root}/Val_AFEW/Happy/000200.avi")
    d = sources.discover("afew", root)
    assert d.classes == ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
    items = {i.video_id: i for i in d.items}
    assert items["Val_AFEW/Happy/000200.avi"].split == "test"
    assert items["Train_AFEW/Happy/000123.avi"].split is None
    assert items["Train_AFEW/Contempt/000125.avi"].dead_reason == "unknown_label"
    plan = split_plan(d.items, (0.5, 0.5, 0.0), seed=0)
    assert plan["Val_AFEW/Happy/000200.avi"] == "test"
    assert {plan[v] for v in items if v.startswith("Train")} <= {"train", "val"}
    with pytest.raises(SourceError, match="Train_AFEW"):
        sources.discover("afew", str(tmp_path / "Val_AFEW"))


# ---- splits ------------------------------------------------------------------------------------

def test_parse_ratios():
    assert parse_ratios("0.7,0.15,0.15") == pytest.approx((0.7, 0.15, 0.15))
    assert parse_ratios("2,1,1") == pytest.approx((0.5, 0.25, 0.25))
    assert parse_ratios("[0.6, 0.2, 0.2]") == pytest.approx((0.6, 0.2, 0.2))
    for bad in ("0.7,0.3", "a,b,c", "0,0.5,0.5", "-1,1,1"):
        with pytest.raises(ValueError):
            parse_ratios(bad)


def test_allocate_hand_worked():
    assert allocate(10, (0.7, 0.15, 0.15)) == [7, 2, 1]  # remainders .5/.5: val first
    assert allocate(3, (0.7, 0.15, 0.15)) == [1, 1, 1]  # every positive split gets one
    assert allocate(2, (0.7, 0.15, 0.15)) == [1, 1, 0]  # train keeps at least one
    assert allocate(1, (0.7, 0.15, 0.15)) == [1, 0, 0]
    assert allocate(5, (1.0, 0.0, 0.0)) == [5, 0, 0]
    assert sum(allocate(123, (0.6, 0.2, 0.2))) == 123


def test_assign_splits_is_the_hash_order_cut_by_ratio():
    subjects = [f"S{k:03d}" for k in range(20)]
    got = assign_splits(subjects, (0.7, 0.15, 0.15), seed=7)
    # Independent reference: sort by sha256("seed:subject") and cut 14 / 3 / 3.
    order = sorted(subjects, key=lambda s: hashlib.sha256(f"7:{s}".encode()).hexdigest())
    expected = {s: "train" for s in order[:14]} | {s: "val" for s in order[14:17]} | {
        s: "test" for s in order[17:]}
    assert got == expected
    assert assign_splits(reversed(subjects), (0.7, 0.15, 0.15), seed=7) == got  # order-free
    assert assign_splits(subjects, (0.7, 0.15, 0.15), seed=8) != got  # the seed matters


def test_split_plan_keeps_subjects_together():
    items = [base.VideoItem(path=f"p{k}", video_id=f"v{k}", subject=f"s{k % 4}", label_name="a")
             for k in range(12)]
    plan = split_plan(items, "0.5,0.25,0.25", seed=3)
    by_subject = {}
    for item in items:
        by_subject.setdefault(item.subject, set()).add(plan[item.video_id])
    assert all(len(s) == 1 for s in by_subject.values())
    assert sorted(np.concatenate([list(s) for s in by_subject.values()])) == ["test", "train", "train", "val"]


def test_assign_folds_balances_clips_hand_worked():
    from vtcaps_pipeline.beam.sources.base import assign_folds

    # Largest first, each to the lightest fold: a(5)->0, b(4)->1, c(3)->1 (4<5), d(2)->0 (5<7),
    # e(1): loads 7/7 and 2/2 subjects -> fold 0. Clips per fold 8 / 7.
    folds = assign_folds({"a": 5, "b": 4, "c": 3, "d": 2, "e": 1}, 2, seed=0)
    assert folds == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 0}
    # Equal counts: the seed decides the order, every seed gives a partition into 3 x 2 subjects.
    subjects = {f"s{i}": 1 for i in range(6)}
    orders = {tuple(sorted(assign_folds(subjects, 3, seed).items())) for seed in range(5)}
    assert len(orders) > 1
    for order in orders:
        assert sorted(list(dict(order).values())) == [0, 0, 1, 1, 2, 2]
    assert assign_folds(subjects, 3, 7) == assign_folds(subjects, 3, 7)
    with pytest.raises(ValueError):
        assign_folds({"a": 1}, 2, 0)
    with pytest.raises(ValueError):
        assign_folds(subjects, 1, 0)
