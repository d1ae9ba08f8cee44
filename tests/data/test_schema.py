"""The TFRecord schema (version 3: JPEG crops + landmarks, several clips of a video a record): a
clip written with `Clip.to_example` or a segment written with `Segment.to_example` parses and
decodes (by the input contract) to the model inputs; version-2 data dirs are read, older ones
are refused clearly."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from vtcaps_tf.data import features
from vtcaps_tf.data.contract import InputContract


def _clip(num=6, size=16, offset=1, clip_frames=4):
    rng = np.random.default_rng(0)
    # Each frame a flat grey level, so the JPEG round trip keeps the value within a few levels.
    levels = np.linspace(20, 220, num).astype(np.uint8)
    frames = [np.full((size, size, 3), v, np.uint8) for v in levels]
    return features.Clip(
        video_id="v1", subject_id="s1", label=3, label_name="happiness", clip_index=0,
        clip_frames=clip_frames, clip_offset=offset, fps=25.0, source="folder",
        frames_jpeg=[features.encode_jpeg(f) for f in frames],
        landmarks=rng.random((num, 68, 2)), image_size=size,
        start_time=0.04, end_time=0.2), levels


def test_round_trip_through_the_reader_schema():
    clip, levels = _clip()
    serialized = clip.to_example().SerializeToString()
    context, sequence = features.parse_example(serialized)
    assert context["label"].numpy() == 3
    assert context["label_name"].numpy() == b"happiness"
    assert context["num_frames"].numpy() == 6
    assert sequence["landmarks"].shape == (6, 136)
    np.testing.assert_allclose(sequence["landmarks"].numpy(),
                               clip.landmarks.reshape(6, 136).astype(np.float32))

    assert set(sequence) == {"frames", "landmarks"}  # no AU maps on disk any more
    inputs = InputContract(4, 6, 16).decode_example(context, sequence)
    assert inputs["frames"].dtype == tf.uint8 and inputs["frames"].shape == (4, 16, 16, 3)
    assert inputs["long_frames"].shape == (6, 16, 16, 3)
    assert inputs["landmarks"].shape == (4, 68, 2)
    # Short clip = stored frames 1..4 (clip_offset 1); long window = all 6 (centre 3.0 -> start 0).
    got_short = inputs["frames"].numpy().mean(axis=(1, 2, 3))
    np.testing.assert_allclose(got_short, levels[1:5], atol=3)
    np.testing.assert_allclose(inputs["long_frames"].numpy().mean(axis=(1, 2, 3)), levels, atol=3)
    np.testing.assert_array_equal(inputs["landmarks"].numpy(), clip.landmarks[1:5].astype(np.float32))
    # Without the teacher only the short clip is decoded.
    short = InputContract(4, 6, 16).decode_example(context, sequence, with_teacher=False)
    assert set(short) == {"frames", "landmarks"}
    np.testing.assert_array_equal(short["frames"], inputs["frames"])


def test_longer_window_than_stored_repeats_edges_and_resizes():
    clip, levels = _clip(num=4, offset=0)
    context, sequence = features.parse_example(clip.to_example().SerializeToString())
    inputs = InputContract(2, 8, 8).decode_example(context, sequence)
    assert inputs["long_frames"].shape == (8, 8, 8, 3)
    # short clip: the stored one's middle 2 frames, 1..2; the long window starts (8 - 2) // 2 = 3
    # frames before it: indices -2..5 clamped to 0,0,0,1,2,3,3,3
    want = levels[[0, 0, 0, 1, 2, 3, 3, 3]]
    np.testing.assert_allclose(inputs["long_frames"].numpy().mean(axis=(1, 2, 3)), want, atol=3)


def test_read_metadata_errors_are_clear(tmp_path):
    with pytest.raises(features.SchemaError, match="does not exist"):
        features.read_metadata(str(tmp_path / "nope"))
    with pytest.raises(features.SchemaError, match="no metadata.json"):
        features.read_metadata(str(tmp_path))
    (tmp_path / "metadata.json").write_text(json.dumps({"schema_version": 0}))
    with pytest.raises(features.SchemaError, match="schema version 0"):
        features.read_metadata(str(tmp_path))
    meta = {"schema_version": features.SCHEMA_VERSION, "classes": ["a"], "clip_frames": 4,
            "long_frames": 8, "image_size": 16}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    assert features.read_metadata(str(tmp_path))["classes"] == ["a"]


def test_a_version_1_data_dir_says_how_to_regenerate(tmp_path):
    meta = {"schema_version": 1, "classes": ["a"], "clip_frames": 4, "long_frames": 8, "image_size": 16}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(features.SchemaError) as err:
        features.read_metadata(str(tmp_path))
    text = str(err.value)
    assert "older version" in text and "schema version 1" in text and "AU maps" in text
    assert "vtcaps preprocess" in text and str(tmp_path) in text


def test_a_version_1_data_dir_stops_training_with_that_message(tmp_path, capsys):
    from tests.data.fixtures import write_dataset
    from vtcaps_tf.cli import main as vtcaps

    root = write_dataset(str(tmp_path / "old"), counts={"train": 1}, schema_version=1)
    assert vtcaps.main(["train", "--data", root, "--run-dir", str(tmp_path / "run"),
                        "--preset", "tiny", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "older version" in err and "vtcaps preprocess" in err


def _segment(offsets=(0, 3, 6), num=10, size=16, clip_frames=4):
    levels = np.linspace(20, 220, num).astype(np.uint8)
    k = len(offsets)
    return features.Segment(
        video_id="v1", subject_id="s1", label=1, label_name="b", clip_frames=clip_frames, fps=10.0,
        source="folder", frames_jpeg=[features.encode_jpeg(np.full((size, size, 3), v, np.uint8))
                                      for v in levels],
        landmarks=np.random.default_rng(0).random((num, 68, 2)), image_size=size,
        clip_index=list(range(k)), clip_offset=list(offsets),
        start_time=[o / 10.0 for o in offsets], end_time=[(o + clip_frames) / 10.0 for o in offsets]), levels


def _write(path, examples):
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for ex in examples:
            w.write(ex.SerializeToString())
    return str(path)


def test_a_segment_is_read_as_its_clips(tmp_path):
    from vtcaps_tf.data import dataset

    seg, levels = _segment()
    clip, clip_levels = _clip()
    path = _write(tmp_path / "train-00000-of-00001.tfrecord.gz", [seg.to_example(), clip.to_example()])
    read = list(features.read_clips([path]))
    assert [int(c["clip_offset"]) for c, _ in read] == [0, 3, 6, 1]
    assert [float(c["start_time"]) for c, _ in read] == pytest.approx([0.0, 0.3, 0.6, 0.04])
    assert [c["video_id"].numpy() for c, _ in read] == [b"v1"] * 4
    assert dataset.count_clips([path]) == 4
    contract = InputContract(4, 8, 16)
    for (context, sequence), offset in zip(read[:3], (0, 3, 6)):
        inputs = contract.decode_example(context, sequence)
        # By hand: the short clip is stored frames offset..offset+3; the long window starts
        # (8 - 4) // 2 = 2 frames before it, clamped to the 10 stored frames.
        long = np.clip(np.arange(offset - 2, offset + 6), 0, 9)
        np.testing.assert_allclose(inputs["frames"].numpy().mean(axis=(1, 2, 3)),
                                   levels[offset:offset + 4], atol=3)
        np.testing.assert_allclose(inputs["long_frames"].numpy().mean(axis=(1, 2, 3)), levels[long], atol=3)
        np.testing.assert_array_equal(inputs["landmarks"].numpy(),
                                      seg.landmarks[offset:offset + 4].astype(np.float32))
    # The training and evaluation pipelines see every clip: 4 clips in batches of 2.
    val = dataset.make_dataset([path], contract, 2, training=False, num_records=4)
    assert [int(y.shape[0]) for _, y in val] == [2, 2]
    train = dataset.make_dataset([path], contract, 4, training=True, num_records=4, cache="records",
                                 augment=dataset.AugmentConfig.none())
    _, labels = next(iter(train))
    assert sorted(labels.numpy().tolist()) == [1, 1, 1, 3]  # one epoch: the 3 + 1 clips


def test_a_segment_is_refused_where_one_clip_is_expected():
    seg, _ = _segment()
    with pytest.raises(tf.errors.InvalidArgumentError, match="exactly one clip"):
        InputContract(4, 8, 16).parse_example(seg.to_example().SerializeToString())
    one, _ = _segment(offsets=(2,))
    inputs, context = InputContract(4, 8, 16).parse_example(one.to_example().SerializeToString())
    assert int(context["clip_offset"]) == 2 and inputs["frames"].shape == (4, 16, 16, 3)


def test_a_segment_must_hold_its_clips():
    seg, _ = _segment()
    with pytest.raises(ValueError, match="does not fit in 10 stored frames"):
        dataclasses.replace(seg, clip_offset=[0, 3, 7]).to_example()
    with pytest.raises(ValueError, match="one clip_index"):
        dataclasses.replace(seg, start_time=[0.0]).to_example()


def test_a_version_2_data_dir_is_read(tmp_path):
    meta = {"schema_version": 2, "classes": ["a"], "clip_frames": 4, "long_frames": 8, "image_size": 16}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    assert features.read_metadata(str(tmp_path))["schema_version"] == 2


def test_jpeg_with_optimised_tables_decodes_to_the_plain_encoders_pixels():
    import cv2

    rgb = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    plain = cv2.imencode(".jpg", rgb[..., ::-1].copy(), [int(cv2.IMWRITE_JPEG_QUALITY), 90])[1].tobytes()
    ours = features.encode_jpeg(rgb, 90)
    assert len(ours) < len(plain)
    np.testing.assert_array_equal(tf.io.decode_jpeg(ours).numpy(), tf.io.decode_jpeg(plain).numpy())
