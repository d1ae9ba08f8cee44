"""tf.data input pipelines over the preprocessing output (schema in `features.py`; which frames
make a model's inputs, and their shapes: `contract.InputContract`).

`read_split` gives the plain decoded clips (evaluation, export checks); `make_dataset` is the
training/validation pipeline: parallel reads, parse, cache of the compact parsed records, shuffle,
parallel decode with augmentation (settings: `vtcaps_tf.config.augment.AugmentConfig`), batch,
prefetch.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from vtcaps_tf.config.augment import AugmentConfig
from vtcaps_tf.config.train_options import DEFAULT_SHUFFLE_BUFFER
from vtcaps_tf.data import features
from vtcaps_tf.data import integrity
from vtcaps_tf.data.contract import InputContract
from vtcaps_tf.face.au import AU_MAP_SIZE
from vtcaps_tf.face.landmarks import NUM_LANDMARKS

# Batches read ahead. The pipelines are not autotuned: tearing down an autotuned iterator waits
# for its tuning thread, for up to tens of seconds on a 2-core machine (fit drops its validation
# iterator at every evaluation and its training iterator at the end of the run). Untuned, the
# parallel maps run as many calls as the runtime has threads, about one per core.
PREFETCH_BATCHES = 2

# Decoded clips are cached in memory only below this estimate (bytes); above it the compact
# parsed records (JPEG + landmarks) are cached instead and decoded every epoch.
DEFAULT_CACHE_BUDGET = 2 << 30


def read_split(data_dir: str, split: str, contract: InputContract,
               num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Unbatched (inputs dict, label) pairs of one split, decoded to the model's named inputs
    (`contract`: the model's `InputContract`, e.g. `model.contract`)."""
    return read_files(_require_files(data_dir, split), contract, num_parallel_calls=num_parallel_calls)


def read_files(files, contract: InputContract, num_parallel_calls=tf.data.AUTOTUNE,
               with_video_id: bool = False, records=None) -> tf.data.Dataset:
    """Unbatched (inputs, label) - or (inputs, label, video_id) - of the given shards, in order.
    `records`: how many records of each shard to read (`integrity.ReadableParts`), default all."""
    if not files:
        raise features.SchemaError("no TFRecord shards to read")
    # Deterministic order: a clip's video id must stay with its prediction.
    if records is None:
        ds = features.read_clips(files)
    else:
        ds = tf.data.Dataset.from_tensor_slices((list(files), tf.constant(records, tf.int64))).flat_map(
            lambda path, n: tf.data.TFRecordDataset(path, compression_type="GZIP").take(n))
        ds = ds.map(features.parse_example).flat_map(features.clips_of)

    def _parse(context, sequence):
        inputs = contract.decode_example(context, sequence)
        if with_video_id:
            return inputs, context["label"], context["video_id"]
        return inputs, context["label"]

    return ds.map(_parse, num_parallel_calls=num_parallel_calls, deterministic=True)


def _require_files(data_dir, split):
    files = features.split_files(data_dir, split)
    if not files:
        raise features.SchemaError(f"no {split}-*{features.SHARD_SUFFIX} shards in {data_dir!r}")
    return files


def _seeds(seed, n):
    """n independent stateless seeds [2] derived from one seed [2]."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, n), axis=0)


# The 68-point scheme's left-right mirror: point i of a mirrored face is point MIRROR_68[i].
MIRROR_68 = np.array(
    list(range(16, -1, -1))  # jaw 0..16
    + list(range(26, 16, -1))  # brows 17..21 <-> 22..26
    + list(range(27, 31))  # nose bridge
    + [35, 34, 33, 32, 31]  # nose base
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes 36..41 <-> 42..47
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65],  # inner lips
    np.int32)


def flip_landmarks(landmarks, au_size: int):
    """Landmarks [..., 68, 2] in [0, 1] of an image mirrored left-right.

    x -> (1 - 1 / au_size) - x: the rendered AU map (`AUMapRender(au_size)`, which puts a point
    at pixel round(x * au_size)) then equals the unflipped map mirrored column for column, as
    flipping the stored map did (it is x -> 1 - x up to a sub-pixel shift). The points are
    renumbered by the 68-point mirror, so that e.g. the left eye stays points 36-41.
    """
    lm = tf.gather(landmarks, MIRROR_68, axis=-2)
    x, y = tf.unstack(lm, axis=-1)
    return tf.stack([(1.0 - 1.0 / au_size) - x, y], axis=-1)


def flip_clip(inputs: dict, au_size: int) -> dict:
    """Mirror a clip left-right: frames [N,S,S,3] and long_frames on axis 2, landmarks by
    `flip_landmarks`, so that the attention follows the face."""
    return {k: flip_landmarks(v, au_size) if k == "landmarks" else tf.reverse(v, axis=[2])
            for k, v in inputs.items()}


def crop_landmarks(landmarks, box, image_size: int):
    """Landmarks [..., 68, 2] in [0, 1] of an image cropped to `box` [1, 4] (y0, x0, y1, x1) and
    resized back, as `tf.image.crop_and_resize` samples it (output pixel i at input pixel
    y0 * (S - 1) + i * (y1 - y0) (S - 1) / (S - 1))."""
    y0, x0, y1, x1 = tf.unstack(box[0])
    s = float(image_size)
    x, y = tf.unstack(landmarks, axis=-1)
    x = (x * s - x0 * (s - 1.0)) / ((x1 - x0) * (s - 1.0)) * (s - 1.0) / s
    y = (y * s - y0 * (s - 1.0)) / ((y1 - y0) * (s - 1.0)) * (s - 1.0) / s
    return tf.stack([x, y], axis=-1)


def augment_clip(inputs: dict, seed, config: AugmentConfig, au_size: int = AU_MAP_SIZE) -> dict:
    """Random crop, flip, brightness and contrast of one decoded clip (stateless in `seed` [2]).
    `au_size`: the model's AU map side (how landmarks are mirrored, `flip_landmarks`)."""
    s_crop, s_flip, s_bright, s_contrast = _seeds(tf.cast(seed, tf.int64), 4)
    out = dict(inputs)
    if config.crop_scale < 1.0:
        # One normalised box for the images and the landmarks: the map stays registered to the face.
        scale = tf.random.stateless_uniform([], s_crop, config.crop_scale, 1.0)
        y0, x0 = tf.unstack(tf.random.stateless_uniform([2], s_crop + 1, 0.0, 1.0) * (1.0 - scale))
        box = tf.stack([y0, x0, y0 + scale, x0 + scale])[None]
        for key in out:
            if key == "landmarks":
                out[key] = crop_landmarks(out[key], box, out["frames"].shape[2])
            else:
                out[key] = _crop_resize(out[key], box)
    if config.flip:
        do_flip = tf.random.stateless_uniform([], s_flip) < 0.5
        out = tf.cond(do_flip, lambda: flip_clip(out, au_size), lambda: dict(out))
    if config.brightness > 0 or config.contrast > 0:
        delta = tf.random.stateless_uniform([], s_bright, -config.brightness, config.brightness) * 255.0
        factor = tf.random.stateless_uniform([], s_contrast, 1.0 - config.contrast, 1.0 + config.contrast)
        for key in ("frames", "long_frames"):
            if key in out:
                out[key] = _photometric(out[key], delta, factor)
    return out


def _crop_resize(images, box):
    """images [T,H,W] or [T,H,W,C], any dtype -> same shape and dtype, cropped to `box` and resized."""
    dtype = images.dtype
    squeeze = images.shape.rank == 3
    x = tf.cast(images[..., None] if squeeze else images, tf.float32)
    size = tf.shape(x)[1:3]
    t = tf.shape(x)[0]
    out = tf.image.crop_and_resize(x, tf.repeat(box, t, axis=0), tf.range(t), size)
    if squeeze:
        out = out[..., 0]
    if dtype == tf.uint8:
        out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
    else:
        out = tf.cast(out, dtype)
    return tf.ensure_shape(out, images.shape)


def _photometric(frames, delta, factor):
    """Contrast about each clip's mean grey level, then brightness; uint8 in and out."""
    x = tf.cast(frames, tf.float32)
    mean = tf.reduce_mean(x)
    x = (x - mean) * factor + mean + delta
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def count_clips(files) -> int:
    """Number of clips in the given shards (one pass; used when metadata lacks the counts)."""
    ds = tf.data.TFRecordDataset(list(files), compression_type="GZIP")
    ds = ds.map(lambda s: features.num_clips(features.parse_example(s)[0]))
    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, k: n + k).numpy())


def make_dataset(files, contract: InputContract, batch_size: int, *,
                 training: bool, augment: AugmentConfig | None = None, num_records: int | None = None,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, cache: str | bool = "auto",
                 cache_budget: int = DEFAULT_CACHE_BUDGET, seed: int = 0,
                 drop_remainder: bool | None = None, records=None,
                 skip_batches: int = 0) -> tf.data.Dataset:
    """Batched (inputs dict, label) pairs of the clips in TFRecord shards, decoded by `contract`
    (the model's `InputContract`, e.g. `model.contract`). `num_records`: the number of clips.

    training=True: repeats forever (fit with steps_per_epoch), reshuffles each epoch, augments
    (`augment`, default AugmentConfig()), drops the last partial batch. training=False: one pass,
    in file order, no augmentation, keeps the partial batch unless drop_remainder=True.
    cache: "auto" (decoded clips when they fit `cache_budget`, else the parsed records when those
    fit, else nothing; needs num_records), "memory"
    (decoded clips), "records" (parsed records), a file path prefix, or False.
    records: how many records of each shard to read (`integrity.ReadableParts`), default all.
    skip_batches (training): start after that many batches, as an iterator that had read them
    would (the same clips, shuffle order and augmentation draws follow), without decoding them.
    """
    if not files:
        raise features.SchemaError("no TFRecord shards to read")
    if training and augment is None:
        augment = AugmentConfig()
    if not training:
        augment = None
    ds = integrity.record_dataset(files, records)
    ds = ds.map(features.parse_example, num_parallel_calls=tf.data.AUTOTUNE)
    # Temporal jitter changes which frames are decoded, so a jittered pipeline caches records.
    jitter = augment is not None and augment.temporal_jitter > 0
    cache_mode = _cache_mode(cache, jitter, num_records, contract, cache_budget)
    # Records are cached before they are split into clips: a segment's frames are held once.
    if cache_mode == "records":
        ds = ds.cache()
    elif cache_mode == "file":
        ds = ds.cache(str(cache))
    ds = ds.flat_map(features.clips_of)

    def _decode(context, sequence, seed_pair=None):
        if seed_pair is not None and jitter:
            shift = tf.random.stateless_uniform([], seed_pair, -augment.temporal_jitter,
                                                augment.temporal_jitter + 1, dtype=tf.int32)
            context = dict(context)
            context["clip_offset"] = context["clip_offset"] + tf.cast(shift, tf.int64)
        return contract.decode_example(context, sequence), context["label"]

    if cache_mode == "memory":
        ds = ds.map(_decode, num_parallel_calls=tf.data.AUTOTUNE).cache()
        decoded = True
    else:
        decoded = False

    if training:
        if num_records:
            shuffle_buffer = min(shuffle_buffer, num_records)  # a whole-epoch shuffle at most
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds)
        if skip_batches:
            ds = ds.skip(int(skip_batches) * batch_size)  # whole batches: drop_remainder below

        def _train_map(data, seed_pair):
            seed_pair = tf.cast(seed_pair, tf.int64)
            if decoded:
                inputs, label = data
            else:
                inputs, label = _decode(*data, seed_pair=seed_pair)
            return augment_clip(inputs, seed_pair + 7, augment, contract.au_size), label

        ds = ds.map(_train_map, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        if not decoded:
            ds = ds.map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=bool(drop_remainder))
    options = tf.data.Options()
    options.autotune.enabled = False  # see PREFETCH_BATCHES
    return ds.prefetch(PREFETCH_BATCHES).with_options(options)


def _cache_mode(cache, jitter, num_records, contract, budget):
    if cache is False or cache is None:
        return None
    if cache in ("memory", "records"):
        # Jitter picks the frames at decode time, so decoded clips cannot be reused.
        return "records" if cache == "memory" and jitter else cache
    if cache == "auto":
        if num_records is None:
            return None
        n, m, s = contract.clip_frames, contract.long_frames, contract.image_size
        decoded = (n + m) * s ** 2 * 3 + n * NUM_LANDMARKS * 2 * 4
        record = m * (NUM_LANDMARKS * 2 * 4 + s ** 2 * 3 // 8)  # landmarks + JPEG (~1/8)
        if not jitter and num_records * decoded <= budget:
            return "memory"
        return "records" if num_records * record <= budget else None
    return "file"


def steps_per_epoch(num_records: int, batch_size: int) -> int:
    """Batches in one pass over `num_records` clips (at least one)."""
    return max(1, math.ceil(num_records / batch_size))
