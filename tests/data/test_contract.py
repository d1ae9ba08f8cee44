"""The input contract: training's tf.data reader and `vtcaps predict`'s clip cutter give the model
identical inputs for the same window, also when M - N is odd and when several clips share a
record; the model's input specs follow it."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from vtcaps_tf.data import clips, dataset, features
from vtcaps_tf.data.contract import InputContract
from vtcaps_tf.face.streaming import ClipCutter, FrameCrop
from vtcaps_tf.models import get_preset


def _video(num_frames, size, seed=0):
    """Distinct random frames as JPEG and as decoded pixels, and random landmarks per frame."""
    rng = np.random.default_rng(seed)
    jpegs = [features.encode_jpeg(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
             for _ in range(num_frames)]
    decoded = np.stack([tf.io.decode_jpeg(j, channels=3).numpy() for j in jpegs])
    landmarks = rng.uniform(0, 1, (num_frames, 68, 2)).astype(np.float32)
    return jpegs, decoded, landmarks


@pytest.mark.parametrize("long_frames", [13, 16])  # M - N odd (5) and even (8)
@pytest.mark.parametrize("clips_per_record", [1, 2, 8])  # records of one clip, or segments
def test_tf_data_and_predict_paths_give_identical_inputs(tmp_path, long_frames, clips_per_record):
    config = dataclasses.replace(get_preset("tiny"), long_frames=long_frames)
    contract = InputContract.from_config(config)
    n, m, s = config.clip_frames, config.long_frames, config.image_size
    num_frames = 3 * n
    jpegs, decoded, landmarks = _video(num_frames, s)
    windows = clips.clip_windows(num_frames, n, m)

    # Training: the Beam job's records of those clips, read back by the tf.data reader.
    path = os.path.join(tmp_path, "train-00000-of-00001.tfrecord.gz")
    segments = clips.segment_windows(windows, num_frames, clips_per_record)
    assert len(segments) == -(-len(windows) // clips_per_record)
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for seg in segments:
            record = features.Segment(
                video_id="v", subject_id="s", label=0, label_name="a", clip_frames=n, fps=25.0,
                source="test", frames_jpeg=[jpegs[t] for t in seg.frames],
                landmarks=landmarks[seg.frames], image_size=s,
                clip_index=[win.index for win in seg.clips], clip_offset=seg.offsets,
                start_time=[0.0] * len(seg.clips), end_time=[0.0] * len(seg.clips))
            w.write(record.to_example().SerializeToString())
    read = [x for x, _ in dataset.read_files([path], contract).as_numpy_iterator()]

    # Prediction: the streaming cutter over the same (decoded) crops.
    cutter = ClipCutter(n, m)
    for t in range(num_frames):
        cutter.push(FrameCrop(decoded[t], landmarks[t], True))
    cutter.finish()
    cut = cutter.take()
    assert len(cut) == len(read) == len(windows) == 3

    for win, a, clip in zip(windows, read, cut):
        b = clip.inputs(contract)
        assert set(a) == set(b) == {"frames", "landmarks", "long_frames"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} of clip {win.index}")
        # And both are the frames clips.clip_windows names (independent of the contract).
        np.testing.assert_array_equal(a["frames"], decoded[win.start:win.stop])
        np.testing.assert_array_equal(a["long_frames"], decoded[win.window])
        np.testing.assert_array_equal(a["landmarks"], landmarks[win.start:win.stop])


def test_window_indices_hand_worked():
    # N=4, M=9 (odd difference 5: 2 frames before the clip, 3 after), stored window of 9 with the
    # clip at offset 2 -> short 2..5, long 0..8.
    short, long = InputContract(4, 9, 8).window_indices(9, 2, 4)
    assert short.numpy().tolist() == [2, 3, 4, 5]
    assert long.numpy().tolist() == list(range(9))
    # A stored clip of 6 frames at offset 1, model N=3 M=6: the middle 3 (left-biased: start
    # 1 + (6-3)//2 = 2), the long window 1 frame earlier, clamped to the 8 stored frames.
    short, long = InputContract(3, 6, 8).window_indices(8, 1, 6)
    assert short.numpy().tolist() == [2, 3, 4]
    assert long.numpy().tolist() == [1, 2, 3, 4, 5, 6]
    short, long = InputContract(2, 8, 8).window_indices(3, 0, 2)
    assert long.numpy().tolist() == [0, 0, 0, 0, 1, 2, 2, 2]


def test_example_round_trip_keeps_landmarks_and_frames():
    contract = InputContract(4, 7, 16)
    rng = np.random.default_rng(2)
    # Flat grey frames: JPEG keeps them within a few levels.
    levels = np.linspace(10, 240, 7).astype(np.uint8)
    crops = np.stack([np.full((16, 16, 3), v, np.uint8) for v in levels])
    landmarks = rng.uniform(0, 1, (7, 68, 2)).astype(np.float32)
    serialized = contract.example(crops, landmarks, contract.before)
    inputs, context = contract.parse_example(tf.constant(serialized))
    want = contract.window_inputs(crops, landmarks, contract.before)
    np.testing.assert_array_equal(inputs["landmarks"], want["landmarks"])
    for key in ("frames", "long_frames"):
        assert np.abs(inputs[key].numpy().astype(int) - want[key].numpy().astype(int)).max() <= 3
    assert context["label"].numpy() == -1


def test_model_input_specs_come_from_the_contract():
    from vtcaps_tf.models import build_model

    config = dataclasses.replace(get_preset("tiny"), long_frames=13, au_size=48)
    model = build_model(config)
    specs = model.input_specs(2)
    want = InputContract.from_config(config).shapes(2)
    assert {k: (tuple(v.shape), v.dtype.name) for k, v in specs.items()} == want
    assert want["landmarks"] == ((2, 8, 68, 2), "float32")
    assert set(model.input_specs(with_teacher=False)) == {"frames", "landmarks"}
    assert model.au_render.size == 48
