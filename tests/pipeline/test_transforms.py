"""The DoFn directly (setup/process/teardown) and the composite transform under TestPipeline."""

import json
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from vtcaps_pipeline.beam import sources
from vtcaps_pipeline.beam import transforms
from vtcaps_pipeline.beam.sources.base import VideoItem
from tests.face import fixtures as fx
from vtcaps_tf.data import features
from vtcaps_tf.face import FaceMesh, landmarks68

N, M, S = 4, 8, 32
CLASSES = ("happy", "sad")


def _config(**kw):
    return transforms.JobConfig(source="folder", classes=CLASSES, clip_frames=N, long_frames=M,
                                image_size=S, **kw)


def _item(path, label="happy", subject="s1", **kw):
    return VideoItem(path=path, video_id=os.path.basename(path), subject=subject, label_name=label, **kw)


@pytest.fixture(scope="module")
def fn():
    dofn = transforms.AnalyzeVideoFn(_config(), split_of=_Splits())
    dofn.setup()
    yield dofn
    dofn.teardown()


class _Splits(dict):
    """Every video in train (the split plan is tested with the sources)."""

    def __missing__(self, key):
        return "train"


def _run(dofn, item):
    out = list(dofn.process(item))
    examples = [o for o in out if not isinstance(o, beam.pvalue.TaggedOutput)]
    tagged = {}
    for o in out:
        if isinstance(o, beam.pvalue.TaggedOutput):
            tagged.setdefault(o.tag, []).append(o.value)
    return examples, tagged


def _check_shared_context(context):
    assert context["label"].numpy() == 1 and context["label_name"].numpy() == b"sad"
    assert context["clip_frames"].numpy() == N and context["image_size"].numpy() == S
    assert context["fold"].numpy() == -1  # train/val/test output: no fold
    assert context["subject_id"].numpy() == b"s1" and context["source"].numpy() == b"folder"


def test_video_becomes_one_record_of_its_clips_each_frame_stored_once(fn, tmp_path):
    # 10 frames -> clips of 4 at 0 and 4, and the last one aligned to the end: frames 6..9. Their
    # long windows of 8 (2 frames before each clip) reach from frame 0 (clamped) to frame 9
    # (clamped): one record of the 10 frames, the clips at offsets 0, 4, 6 in it.
    path = fx.write_face_video(str(tmp_path / "s1_0.avi"), n=10)
    examples, tagged = _run(fn, _item(path, label="sad"))
    assert DEAD not in tagged
    assert len(examples) == 1 and examples[0][0] == "train"
    [outcome] = tagged[transforms.OUTCOMES]
    assert outcome["status"] == "ok" and outcome["clips"] == 3 and outcome["frames"] == 10
    assert outcome["faces_found"] == 10 and outcome["faces_missing"] == 0
    context, sequence = features.parse_example(tf.constant(examples[0][1]))
    _check_shared_context(context)
    assert context["num_frames"].numpy() == 10
    assert context["clip_index"].numpy().tolist() == [0, 1, 2]
    assert context["clip_offset"].numpy().tolist() == [0, 4, 6]
    assert context["start_time"].numpy() == pytest.approx([0.0, 0.4, 0.6])
    assert context["end_time"].numpy() == pytest.approx([0.4, 0.8, 1.0])
    assert sequence["frames"].shape == (10,) and sequence["landmarks"].shape == (10, 136)
    assert set(sequence) == {"frames", "landmarks"}  # no AU maps stored
    img = tf.io.decode_jpeg(sequence["frames"][0]).numpy()
    assert img.shape == (S, S, 3)


def test_one_clip_per_record_stores_each_clips_window(fn, tmp_path):
    path = fx.write_face_video(str(tmp_path / "s1_0.avi"), n=10)
    [(_, segment)] = _run(fn, _item(path, label="sad"))[0]
    stored = features.parse_example(tf.constant(segment))[1]["frames"].numpy()
    dofn = transforms.AnalyzeVideoFn(_config(clips_per_record=1), split_of=_Splits())
    dofn.setup()
    try:
        examples, tagged = _run(dofn, _item(path, label="sad"))
    finally:
        dofn.teardown()
    assert len(examples) == 3 and tagged[transforms.OUTCOMES][0]["clips"] == 3
    # Each clip's long window, worked by hand: 2 frames before the clip, clamped to frames 0..9:
    # 0,0,0,1..5 / 2..9 / 4..9,9,9. A record stores the video frames it names (the repeats of
    # the video's edge frames are the reader's clamping), the clip at 0, 2, 2 in them.
    stored_frames, offsets = [range(0, 6), range(2, 10), range(4, 10)], [0, 2, 2]
    for k, (_, serialized) in enumerate(examples):
        context, sequence = features.parse_example(tf.constant(serialized))
        _check_shared_context(context)
        t = len(stored_frames[k])
        assert context["clip_index"].numpy().tolist() == [k] and context["num_frames"].numpy() == t
        assert context["clip_offset"].numpy().tolist() == [offsets[k]]
        assert context["start_time"].numpy() == pytest.approx([[0, 4, 6][k] / 10.0])
        assert sequence["frames"].shape == (t,) and sequence["landmarks"].shape == (t, 136)
        # The same JPEGs as the segment's stored frames at those video frames.
        assert sequence["frames"].numpy().tolist() == stored[list(stored_frames[k])].tolist()


DEAD = transforms.DEAD_LETTERS


@pytest.mark.parametrize("maker, reason", [
    (lambda d: fx.write_bad_files(d)["empty_file"], "empty_file"),
    (lambda d: fx.write_bad_files(d)["unreadable"], "unreadable"),
    (lambda d: fx.write_truncated_video(os.path.join(d, "cut.avi")), "truncated"),
    (lambda d: fx.write_noface_video(os.path.join(d, "grey.avi")), "no_face"),
])
def test_bad_videos_become_one_dead_letter(fn, tmp_path, maker, reason):
    path = maker(str(tmp_path))
    examples, tagged = _run(fn, _item(path))
    assert examples == []
    assert [d["reason"] for d in tagged[DEAD]] == [reason]
    assert tagged[DEAD][0]["path"] == path and tagged[DEAD][0]["detail"]
    assert transforms.OUTCOMES not in tagged  # the outcome of a dead letter is made downstream


def test_short_video_is_brought_to_length_or_dropped_by_policy(fn, tmp_path):
    path = fx.write_face_video(str(tmp_path / "short.avi"), n=3)
    examples, tagged = _run(fn, _item(path))  # default policy: resample -> one clip
    [outcome] = tagged[transforms.OUTCOMES]
    assert len(examples) == 1 and outcome["short_sequences"] == 1 and outcome["clips"] == 1
    context, _ = features.parse_example(tf.constant(examples[0][1]))
    assert context["end_time"].numpy() == pytest.approx(3 / 10.0)  # the clip spans the whole video
    dofn = transforms.AnalyzeVideoFn(_config(short_policy="drop"), split_of=_Splits())
    dofn.setup()
    try:
        examples, tagged = _run(dofn, _item(path))
    finally:
        dofn.teardown()
    assert examples == [] and [d["reason"] for d in tagged[DEAD]] == ["too_few_frames"]


def test_unknown_and_missing_labels(fn, tmp_path):
    path = fx.write_face_video(str(tmp_path / "x.avi"), n=4)
    _, tagged = _run(fn, _item(path, label="angry"))
    assert tagged[DEAD][0]["reason"] == "unknown_label"
    _, tagged = _run(fn, _item(path, dead_reason="no_label", dead_detail="no emotion file"))
    assert tagged[DEAD] == [{"path": path, "reason": "no_label", "detail": "no emotion file"}]


def test_ckplus_sequence_uses_shipped_landmarks(tmp_path):
    with FaceMesh(video=False) as mesh:
        template = landmarks68(mesh.detect(fx.face_image()))
    shipped = template.copy()
    shipped[48:68, 1] += 12.0  # mouth moved down: unlike anything MediaPipe would find
    fx.write_ckplus_dataset(str(tmp_path), [("S005", "001", 5)], frames=4, landmarks=shipped)
    [item] = sources.discover("ckplus", str(tmp_path)).items
    assert item.landmark_files is not None
    dofn = transforms.AnalyzeVideoFn(transforms.JobConfig(
        source="ckplus", classes=("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"),
        clip_frames=4, long_frames=4, image_size=S), split_of=_Splits())
    dofn.setup()
    try:
        examples, tagged = _run(dofn, item)
    finally:
        dofn.teardown()
    [(_, serialized)] = examples
    context, sequence = features.parse_example(tf.constant(serialized))
    assert context["label_name"].numpy() == b"happy"  # code 5
    stored = sequence["landmarks"].numpy()[0].reshape(68, 2)

    # Mouth-to-eyes distance over eye span: unchanged by the alignment (a similarity).
    def ratio(lm):
        return np.linalg.norm(lm[48:68].mean(0) - lm[36:48].mean(0)) / np.linalg.norm(lm[36] - lm[45])

    assert ratio(stored) == pytest.approx(ratio(shipped), rel=1e-3)
    assert abs(ratio(stored) - ratio(template)) > 0.05


def test_summarize_outcomes_combines_by_split():
    outcomes = [
        {"status": "ok", "split": "train", "label_name": "a", "subject": "s1", "frames": 10,
         "clips": 2, "faces_found": 9, "faces_missing": 1},
        {"status": "ok", "split": "train", "label_name": "b", "subject": "s2", "frames": 8,
         "clips": 2, "faces_found": 8, "faces_missing": 0},
        {"status": "ok", "split": "val", "label_name": "a", "subject": "s3", "frames": 4,
         "clips": 1, "faces_found": 4, "faces_missing": 0},
        {"status": "dead_letter", "reason": "no_face"},
        {"status": "dead_letter", "reason": "no_face"},
    ]
    fn = transforms.SummarizeOutcomesFn()
    parts = [fn.create_accumulator(), fn.create_accumulator()]
    for k, o in enumerate(outcomes):  # two accumulators merged, as a runner would
        parts[k % 2] = fn.add_input(parts[k % 2], o)
    out = fn.extract_output(fn.merge_accumulators(parts))
    assert out["dead_letters"] == {"no_face": 2}
    assert out["splits"]["train"] == {"videos_per_class": {"a": 1, "b": 1},
                                      "clips_per_class": {"a": 2, "b": 2}, "frames": 18,
                                      "faces_found": 17, "faces_missing": 1, "subjects": ["s1", "s2"],
                                      "short_sequences": 0, "clips_not_near_peak": 0}
    assert out["splits"]["val"]["clips_per_class"] == {"a": 1}


def test_process_videos_under_test_pipeline(tmp_path):
    root = str(tmp_path)
    good = [fx.write_face_video(f"{root}/s{k}_0.avi", n=8, seed=k) for k in range(2)]
    bad = fx.write_bad_files(root)
    items = [_item(p, subject=f"s{k}") for k, p in enumerate(good)] + [
        _item(p, subject="s9") for p in bad.values()]
    split_of = {"s0_0.avi": "train", "s1_0.avi": "val", "bad_empty.avi": "test", "bad_text.avi": "test"}
    with test_pipeline.TestPipeline(runner=FnApiRunner()) as p:
        out = (p | beam.Create(items)
               | transforms.ProcessVideos(_config(), split_of))
        # Each 8-frame video gives 2 clips of 4, in one record.
        splits = out["examples"] | "SplitKeys" >> beam.Keys()
        assert_that(splits, equal_to(["train", "val"]), label="RecordsBySplit")
        reasons = out["dead_letters"] | "Reasons" >> beam.Map(lambda d: (d["path"], d["reason"]))
        assert_that(reasons, equal_to([(bad["empty_file"], "empty_file"),
                                       (bad["unreadable"], "unreadable")]), label="DeadLetters")
        statuses = out["outcomes"] | "Statuses" >> beam.Map(lambda o: o["status"])
        assert_that(statuses, equal_to(["ok", "ok", "dead_letter", "dead_letter"]), label="OneEach")


def test_tfrecord_sink_writes_gzip_shards(tmp_path):
    records = [f"record {k}".encode() for k in range(5)]
    with test_pipeline.TestPipeline(runner=FnApiRunner()) as p:
        (p | beam.Create([("train", r) for r in records] + [("test", b"t")])
         | transforms.WriteExamples(str(tmp_path)))
    for split, expected in (("train", records), ("val", []), ("test", [b"t"])):
        files = features.split_files(str(tmp_path), split)
        assert files, f"a {split} shard exists even when empty"
        got = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
        assert sorted(got) == sorted(expected)
    assert json.loads(transforms.to_json_line({"b": 1, "a": 2})) == {"a": 2, "b": 1}


def test_a_video_of_two_faces_is_counted_in_multi_face_videos(tmp_path):
    from apache_beam.metrics.metric import MetricsFilter

    two, _ = fx.group_scene([90, 60], size=(320, 180), seed=7)
    one, _ = fx.group_scene([90], size=(320, 180), seed=7)
    items = [_item(fx.write_video(str(tmp_path / "two_0.avi"), np.stack([two] * 8)), subject="s1"),
             _item(fx.write_video(str(tmp_path / "one_0.avi"), np.stack([one] * 8)), subject="s2")]
    p = test_pipeline.TestPipeline(runner=FnApiRunner())
    out = p | beam.Create(items) | transforms.ProcessVideos(_config(), _Splits())
    statuses = out["outcomes"] | "Statuses" >> beam.Map(lambda o: o["status"])
    assert_that(statuses, equal_to(["ok", "ok"]), label="BothKept")
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("multi_face_videos"))["counters"]
    assert sum(c.committed for c in counters) == 1
