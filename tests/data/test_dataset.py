"""The tf.data training pipeline: augmentations checked against numpy, batching, caching, jitter."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.data.fixtures import write_dataset
from vtcaps_tf.data import dataset, features
from vtcaps_tf.data.contract import InputContract
from vtcaps_tf.face.au import au_attention_map
from vtcaps_tf.layers.au_render import AUMapRender


def _random_clip(seed=0, n=4, m=6, s=8):
    rng = np.random.default_rng(seed)
    return {
        "frames": tf.constant(rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)),
        "landmarks": tf.constant(rng.uniform(0.05, 0.95, (n, 68, 2)).astype(np.float32)),
        "long_frames": tf.constant(rng.integers(0, 256, (m, s, s, 3), dtype=np.uint8)),
    }


def _flipped_landmarks_by_hand(lm, au_size):
    """Mirror by hand: point i takes the place of its mirror partner, x -> (1 - 1/A) - x."""
    pairs = [(i, 16 - i) for i in range(17)] + [(17 + i, 26 - i) for i in range(10)] \
        + [(i, i) for i in range(27, 31)] + [(31 + i, 35 - i) for i in range(5)] \
        + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)] \
        + [(48, 54), (49, 53), (50, 52), (51, 51), (55, 59), (56, 58), (57, 57)] \
        + [(60, 64), (61, 63), (62, 62), (65, 67), (66, 66)]
    partner = {}
    for a, b in pairs:
        partner[a], partner[b] = b, a
    assert sorted(partner) == list(range(68))
    out = lm[..., [partner[i] for i in range(68)], :].copy()
    out[..., 0] = (1 - 1 / au_size) - out[..., 0]
    return out


def test_flip_mirrors_frames_and_landmarks_like_numpy():
    clip = _random_clip()
    out = dataset.flip_clip(clip, 100)
    np.testing.assert_array_equal(out["frames"], clip["frames"].numpy()[:, :, ::-1, :])
    np.testing.assert_array_equal(out["long_frames"], clip["long_frames"].numpy()[:, :, ::-1, :])
    np.testing.assert_allclose(out["landmarks"], _flipped_landmarks_by_hand(clip["landmarks"].numpy(), 100),
                               atol=1e-6)


@pytest.mark.parametrize("au_size", [100, 48])
def test_map_of_flipped_landmarks_is_the_flipped_map(au_size):
    # Face-like landmarks (a real mesh's) at random places and scales, so the AU centres are spread
    # over the map, near its borders too.
    from tests.layers.test_au_render import face_like_landmarks

    lm = face_like_landmarks(40, seed=3)
    flipped = dataset.flip_landmarks(tf.constant(lm), au_size).numpy()
    for k in range(len(lm)):
        want = au_attention_map(lm[k] * au_size, au_size)[:, ::-1]
        np.testing.assert_array_equal(au_attention_map(flipped[k] * au_size, au_size), want)
    rendered = AUMapRender(au_size)(flipped[None]).numpy()[0]
    np.testing.assert_array_equal(rendered, np.stack([au_attention_map(x * au_size, au_size)[:, ::-1]
                                                      for x in lm]))


def test_random_flip_is_all_or_nothing_per_clip():
    clip = _random_clip(1)
    cfg = dataset.AugmentConfig(crop_scale=1.0, flip=True, brightness=0.0, contrast=0.0)
    outcomes = set()
    for k in range(16):
        out = dataset.augment_clip(clip, tf.constant([k, 3], tf.int64), cfg, au_size=100)
        flipped = np.array_equal(out["frames"], clip["frames"].numpy()[:, :, ::-1])
        if flipped:
            np.testing.assert_allclose(out["landmarks"],
                                       _flipped_landmarks_by_hand(clip["landmarks"].numpy(), 100), atol=1e-6)
            np.testing.assert_array_equal(out["long_frames"], clip["long_frames"].numpy()[:, :, ::-1])
        else:
            for key in clip:
                np.testing.assert_array_equal(out[key], clip[key])
        outcomes.add(flipped)
    assert outcomes == {True, False}


def test_crop_keeps_the_landmarks_registered_to_the_frames():
    # Pixel value encodes the x (channel 0) and y (channel 1) pixel coordinate (linear ramps, so
    # bilinear resampling is exact): after the crop, the frame read at a landmark's new place must
    # still show the landmark's original coordinates.
    s = 16
    step = 255.0 / (s - 1)
    ramp = np.arange(s) * step
    img = np.zeros((s, s, 3))
    img[..., 0] = ramp[None, :]
    img[..., 1] = ramp[:, None]
    rng = np.random.default_rng(4)
    pix = rng.uniform(2, s - 3, (2, 68, 2))  # landmark positions in pixels
    clip = {
        "frames": tf.constant(np.repeat(img[None], 2, 0).round().astype(np.uint8)),
        "landmarks": tf.constant((pix / s).astype(np.float32)),
        "long_frames": tf.constant(np.repeat(img[None], 3, 0).round().astype(np.uint8)),
    }
    cfg = dataset.AugmentConfig(crop_scale=0.6, flip=False, brightness=0.0, contrast=0.0)
    scales = []
    for k in range(8):
        out = dataset.augment_clip(clip, tf.constant([k, 11], tf.int64), cfg)
        f = out["frames"].numpy()[0].astype(np.float64)
        assert out["frames"].shape == (2, s, s, 3) and out["landmarks"].shape == (2, 68, 2)
        new = out["landmarks"].numpy()[0] * s  # new pixel positions
        inside = np.all((new >= 0) & (new <= s - 1), axis=1)
        assert inside.sum() >= 5
        for (x, y), (x0, y0) in zip(new[inside], pix[0][inside]):
            row = np.interp(x, np.arange(s), f[int(round(y)), :, 0])  # x ramp along the row
            col = np.interp(y, np.arange(s), f[:, int(round(x)), 1])  # y ramp along the column
            assert abs(row - x0 * step) <= 1.5 and abs(col - y0 * step) <= 1.5
        np.testing.assert_array_equal(out["long_frames"][0], out["frames"][0])
        scales.append(np.ptp(new[:, 0]) / np.ptp(pix[0][:, 0]))
    assert min(scales) >= 1.0 - 1e-4 and max(scales) <= 1 / 0.6 + 1e-4
    assert max(scales) - min(scales) > 1e-3  # the scale really varies


def test_photometric_matches_numpy():
    x = np.random.default_rng(2).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    out = dataset._photometric(tf.constant(x), tf.constant(20.0), tf.constant(1.3)).numpy()
    xf = x.astype(np.float64)
    want = np.clip(np.round((xf - xf.mean()) * 1.3 + xf.mean() + 20.0), 0, 255).astype(np.uint8)
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 1  # float32 vs float64 rounding


def _levels_dataset(root, levels, clip_frames, offset):
    """One clip whose frames are flat grey levels (JPEG keeps a flat level within a few counts)."""
    n = len(levels)
    clip = features.Clip(
        video_id="v", subject_id="s", label=1, label_name="b", clip_index=0, clip_frames=clip_frames,
        clip_offset=offset, fps=25.0, source="test",
        frames_jpeg=[features.encode_jpeg(np.full((8, 8, 3), v, np.uint8)) for v in levels],
        landmarks=np.zeros((n, 68, 2)), image_size=8)
    path = os.path.join(root, "train-00000-of-00001.tfrecord.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        w.write(clip.to_example().SerializeToString())
    return [path]


def test_temporal_jitter_shifts_the_clip_within_the_window(tmp_path):
    levels = np.arange(10, 250, 16)  # 15 distinct frames, one level each
    files = _levels_dataset(str(tmp_path), levels, clip_frames=4, offset=5)
    cfg = dataset.AugmentConfig(crop_scale=1.0, flip=False, brightness=0.0, contrast=0.0, temporal_jitter=3)
    ds = dataset.make_dataset(files, InputContract(4, 8, 8), batch_size=1, training=True, augment=cfg, seed=5)
    shifts = set()
    for inputs, label in ds.take(30):
        got = inputs["frames"].numpy()[0, :, 0, 0, 0].astype(int)
        # Unjittered short clip: centre 5 + 4/2 = 7 -> stored frames 5..8. Find the shift.
        matches = [d for d in range(-3, 4) if np.abs(got - levels[5 + d:9 + d]).max() <= 3]
        assert len(matches) == 1, got
        shifts.add(matches[0])
        assert label.numpy()[0] == 1
    assert len(shifts) >= 3 and shifts <= set(range(-3, 4))


def test_make_dataset_training_and_eval_batches(tmp_path):
    root = write_dataset(str(tmp_path), counts={"train": 5, "val": 5}, image_size=16,
                         clip_frames=4, long_frames=8, shards=2)
    train = dataset.make_dataset(features.split_files(root, "train"), InputContract(4, 8, 16), batch_size=2,
                                 training=True, num_records=5)
    inputs, labels = next(iter(train))
    assert inputs["frames"].shape == (2, 4, 16, 16, 3) and inputs["frames"].dtype == tf.uint8
    assert inputs["landmarks"].shape == (2, 4, 68, 2) and inputs["landmarks"].dtype == tf.float32
    assert inputs["long_frames"].shape == (2, 8, 16, 16, 3)
    assert labels.dtype == tf.int64
    assert len(list(train.take(7))) == 7  # repeats: fit sets steps_per_epoch

    val = dataset.make_dataset(features.split_files(root, "val"), InputContract(4, 8, 16), batch_size=2,
                               training=False, num_records=5, cache="memory")
    sizes = [int(lbl.shape[0]) for _, lbl in val]
    assert sizes == [2, 2, 1]  # one pass, partial batch kept
    # Not autotuned: fit drops the evaluation iterator every epoch and the training one at the end
    # of the run, and tearing down an autotuned iterator waits for its tuning thread.
    assert val.options().autotune.enabled is False
    assert train.options().autotune.enabled is False
    # The eval pipeline decodes exactly like read_split (no augmentation).
    plain = [x["frames"].numpy() for x, _ in
             dataset.read_split(root, "val", InputContract(4, 8, 16))]
    batched = np.concatenate([x["frames"].numpy() for x, _ in val])
    np.testing.assert_array_equal(np.sort(batched.reshape(5, -1), 0), np.sort(np.stack(plain).reshape(5, -1), 0))
    assert dataset.steps_per_epoch(5, 2) == 3 and dataset.steps_per_epoch(1, 16) == 1


def test_missing_shards_is_a_clear_error(tmp_path):
    with pytest.raises(features.SchemaError, match="no test-"):
        dataset.read_split(str(tmp_path), "test", InputContract(4, 8, 16))
    with pytest.raises(features.SchemaError):
        dataset.make_dataset([], InputContract(4, 8, 16), 2, training=True)


def test_bad_augment_config():
    with pytest.raises(ValueError, match="crop_scale"):
        dataset.AugmentConfig(crop_scale=0.0)


def test_auto_cache_keeps_what_fits():
    # small preset sizes: decoded clip = (16+32)*112*112*3 + 16*68*2*4 = 1,815,040 bytes;
    # parsed record ~ 32*(68*2*4 + 112*112*3//8) = 32*(544 + 4704) = 167,936 bytes.
    mode = dataset._cache_mode
    small = InputContract(16, 32, 112)
    assert mode("auto", False, 100, small, 1_815_040 * 100) == "memory"
    assert mode("auto", False, 101, small, 1_815_040 * 100) == "records"
    assert mode("auto", True, 10, small, 1 << 40) == "records"  # jitter: decode each epoch
    assert mode("auto", False, 1000, small, 167_936 * 999) is None
    assert mode("auto", False, 999, small, 167_936 * 999) == "records"
    assert mode("auto", False, None, small, 1 << 40) is None
    assert mode("memory", True, 10, small, 0) == "records"
    assert mode(False, False, 10, small, 1 << 40) is None
