"""The TFRecord schema: a clip written with `Clip.to_example` parses and decodes to the model inputs."""

import json

import numpy as np
import pytest
import tensorflow as tf

from vtcaps_tf.data import features


def _clip(num=6, size=16, offset=1, clip_frames=4):
    rng = np.random.default_rng(0)
    # Each frame a flat grey level, so the JPEG round trip keeps the value within a few levels.
    levels = np.linspace(20, 220, num).astype(np.uint8)
    frames = [np.full((size, size, 3), v, np.uint8) for v in levels]
    return features.Clip(
        video_id="v1", subject_id="s1", label=3, label_name="happiness", clip_index=0,
        clip_frames=clip_frames, clip_offset=offset, fps=25.0, source="folder",
        frames_jpeg=[features.encode_jpeg(f) for f in frames],
        landmarks=rng.random((num, 68, 2)), au_maps=rng.random((num, 100, 100)), image_size=size,
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

    inputs = features.decode_clip(context, sequence, clip_frames=4, long_frames=6, image_size=16)
    assert inputs["frames"].dtype == tf.uint8 and inputs["frames"].shape == (4, 16, 16, 3)
    assert inputs["long_frames"].shape == (6, 16, 16, 3)
    assert inputs["au_map"].shape == (4, 100, 100)
    # Short clip = stored frames 1..4 (clip_offset 1); long window = all 6 (centre 3.0 -> start 0).
    got_short = inputs["frames"].numpy().mean(axis=(1, 2, 3))
    np.testing.assert_allclose(got_short, levels[1:5], atol=3)
    np.testing.assert_allclose(inputs["long_frames"].numpy().mean(axis=(1, 2, 3)), levels, atol=3)
    # AU maps are float16 on disk.
    np.testing.assert_allclose(inputs["au_map"].numpy(),
                               clip.au_maps[1:5].astype(np.float16).astype(np.float32))


def test_longer_window_than_stored_repeats_edges_and_resizes():
    clip, levels = _clip(num=4, offset=0)
    context, sequence = features.parse_example(clip.to_example().SerializeToString())
    inputs = features.decode_clip(context, sequence, clip_frames=2, long_frames=8, image_size=8)
    assert inputs["long_frames"].shape == (8, 8, 8, 3)
    # centre 2.0, M=8 -> indices -2..5 clamped to 0,0,0,1,2,3,3,3
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
