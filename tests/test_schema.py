"""The TFRecord schema (version 2: JPEG crops + landmarks): a clip written with `Clip.to_example`
parses and decodes (by the input contract) to the model inputs; older data dirs are refused clearly."""

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
    from vtcaps_tf import training

    root = write_dataset(str(tmp_path / "old"), counts={"train": 1}, schema_version=1)
    assert training.cli_main(["--data", root, "--run-dir", str(tmp_path / "run"),
                              "--preset", "tiny", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "older version" in err and "vtcaps preprocess" in err
