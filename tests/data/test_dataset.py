"""The tf.data training pipeline: augmentations checked against numpy, batching, caching, jitter."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.data.fixtures import write_dataset
from vtcaps_tf.data import dataset, features


def _random_clip(seed=0, n=4, m=6, s=8):
    rng = np.random.default_rng(seed)
    return {
        "frames": tf.constant(rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)),
        "au_map": tf.constant(rng.random((n, 100, 100), dtype=np.float32)),
        "long_frames": tf.constant(rng.integers(0, 256, (m, s, s, 3), dtype=np.uint8)),
    }


def test_flip_mirrors_frames_and_au_map_like_numpy():
    clip = _random_clip()
    out = dataset.flip_clip(clip)
    np.testing.assert_array_equal(out["frames"], clip["frames"].numpy()[:, :, ::-1, :])
    np.testing.assert_array_equal(out["long_frames"], clip["long_frames"].numpy()[:, :, ::-1, :])
    # AU map rows are y, columns x: a left-right flip reverses the columns.
    np.testing.assert_array_equal(out["au_map"], clip["au_map"].numpy()[:, :, ::-1])


def test_random_flip_is_all_or_nothing_per_clip():
    clip = _random_clip(1)
    cfg = dataset.AugmentConfig(crop_scale=1.0, flip=True, brightness=0.0, contrast=0.0)
    outcomes = set()
    for k in range(16):
        out = dataset.augment_clip(clip, tf.constant([k, 3], tf.int64), cfg)
        flipped = np.array_equal(out["frames"], clip["frames"].numpy()[:, :, ::-1])
        if flipped:
            np.testing.assert_array_equal(out["au_map"], clip["au_map"].numpy()[:, :, ::-1])
            np.testing.assert_array_equal(out["long_frames"], clip["long_frames"].numpy()[:, :, ::-1])
        else:
            for key in clip:
                np.testing.assert_array_equal(out[key], clip[key])
        outcomes.add(flipped)
    assert outcomes == {True, False}


def test_crop_keeps_the_au_map_registered_to_the_frames():
    # Pixel value encodes the normalised x coordinate (a linear ramp, so bilinear resampling is
    # exact): after the shared crop box, both must show the same x range at their edges.
    s = 16
    ramp_img = np.tile((np.arange(s) / (s - 1) * 255.0)[None, :], (s, 1))
    ramp_map = np.tile((np.arange(100) / 99.0)[None, :], (100, 1))
    clip = {
        "frames": tf.constant(np.repeat(ramp_img[None, ..., None], 3, -1).repeat(2, 0).round().astype(np.uint8)),
        "au_map": tf.constant(np.repeat(ramp_map[None], 2, 0).astype(np.float32)),
        "long_frames": tf.constant(np.repeat(ramp_img[None, ..., None], 3, -1).repeat(3, 0).round().astype(np.uint8)),
    }
    cfg = dataset.AugmentConfig(crop_scale=0.6, flip=True, brightness=0.0, contrast=0.0)
    widths = []
    for k in range(8):
        out = dataset.augment_clip(clip, tf.constant([k, 11], tf.int64), cfg)
        f = out["frames"].numpy()[0, 0, :, 0] / 255.0
        m = out["au_map"].numpy()[0, 0]
        assert out["frames"].shape == (2, s, s, 3) and out["au_map"].shape == (2, 100, 100)
        np.testing.assert_allclose([f[0], f[-1]], [m[0], m[-1]], atol=2.5 / 255)
        np.testing.assert_array_equal(out["long_frames"][0], out["frames"][0])
        widths.append(abs(m[-1] - m[0]))
    assert min(widths) >= 0.6 - 1e-5 and max(widths) <= 1.0 + 1e-5
    assert max(widths) - min(widths) > 1e-3  # the scale really varies


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
        landmarks=np.zeros((n, 68, 2)), au_maps=np.zeros((n, 100, 100)), image_size=8)
    path = os.path.join(root, "train-00000-of-00001.tfrecord.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        w.write(clip.to_example().SerializeToString())
    return [path]


def test_temporal_jitter_shifts_the_clip_within_the_window(tmp_path):
    levels = np.arange(10, 250, 16)  # 15 distinct frames, one level each
    files = _levels_dataset(str(tmp_path), levels, clip_frames=4, offset=5)
    cfg = dataset.AugmentConfig(crop_scale=1.0, flip=False, brightness=0.0, contrast=0.0, temporal_jitter=3)
    ds = dataset.make_dataset(files, 4, 8, 8, batch_size=1, training=True, augment=cfg, seed=5)
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
    train = dataset.make_dataset(features.split_files(root, "train"), 4, 8, 16, batch_size=2,
                                 training=True, num_records=5)
    inputs, labels = next(iter(train))
    assert inputs["frames"].shape == (2, 4, 16, 16, 3) and inputs["frames"].dtype == tf.uint8
    assert inputs["au_map"].shape == (2, 4, 100, 100) and inputs["au_map"].dtype == tf.float32
    assert inputs["long_frames"].shape == (2, 8, 16, 16, 3)
    assert labels.dtype == tf.int64
    assert len(list(train.take(7))) == 7  # repeats: fit sets steps_per_epoch

    val = dataset.make_dataset(features.split_files(root, "val"), 4, 8, 16, batch_size=2,
                               training=False, num_records=5, cache="memory")
    sizes = [int(lbl.shape[0]) for _, lbl in val]
    assert sizes == [2, 2, 1]  # one pass, partial batch kept
    # The eval pipeline decodes exactly like read_split (no augmentation).
    plain = [x["frames"].numpy() for x, _ in
             dataset.read_split(root, "val", 4, 8, 16)]
    batched = np.concatenate([x["frames"].numpy() for x, _ in val])
    np.testing.assert_array_equal(np.sort(batched.reshape(5, -1), 0), np.sort(np.stack(plain).reshape(5, -1), 0))
    assert dataset.steps_per_epoch(5, 2) == 3 and dataset.steps_per_epoch(1, 16) == 1


def test_missing_shards_is_a_clear_error(tmp_path):
    with pytest.raises(features.SchemaError, match="no test-"):
        dataset.read_split(str(tmp_path), "test", 4, 8, 16)
    with pytest.raises(features.SchemaError):
        dataset.make_dataset([], 4, 8, 16, 2, training=True)


def test_bad_augment_config():
    with pytest.raises(ValueError, match="crop_scale"):
        dataset.AugmentConfig(crop_scale=0.0)


def test_auto_cache_keeps_what_fits():
    # small preset sizes: decoded clip = (16+32)*112*112*3 + 16*100*100*4 = 2,446,336 bytes;
    # parsed record ~ 32*(100*100*2 + 112*112*3//8) = 32*(20000 + 4704) = 790,528 bytes.
    mode = dataset._cache_mode
    assert mode("auto", False, 100, 16, 32, 112, 2_446_336 * 100) == "memory"
    assert mode("auto", False, 101, 16, 32, 112, 2_446_336 * 100) == "records"
    assert mode("auto", True, 10, 16, 32, 112, 1 << 40) == "records"  # jitter: decode each epoch
    assert mode("auto", False, 1000, 16, 32, 112, 790_528 * 999) is None
    assert mode("auto", False, 999, 16, 32, 112, 790_528 * 999) == "records"
    assert mode("auto", False, None, 16, 32, 112, 1 << 40) is None
    assert mode("memory", True, 10, 16, 32, 112, 0) == "records"
    assert mode(False, False, 10, 16, 32, 112, 1 << 40) is None
