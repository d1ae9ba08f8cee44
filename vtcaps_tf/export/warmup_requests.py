"""The warm-up requests of a version: `assets.extra/tf_serving_warmup_requests`, a TFRecord of
`PredictionLog`s that TensorFlow Serving (and `vtcaps serve`) replays before it marks the
version AVAILABLE, so that the first client request does not pay for tracing and allocation.

One `PredictLog` per signature and batch size, built from the model's input contract: a zero
clip for `serving_default`, and the same clip as a serialized SequenceExample for
`serve_examples`. TF Serving reads at most `MAX_WARMUP_RECORDS` records.
"""

from __future__ import annotations

import os

import numpy as np

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit (saved_model_warmup_util)
WARMUP_BATCH_SIZES = (1,)


def zero_window(contract, with_teacher: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(crops uint8 [T, S, S, 3], landmarks [T, 68, 2], clip offset): a stored window holding
    the clip (and, with the teacher, its long window) of black crops and centred landmarks."""
    frames = contract.long_frames if with_teacher else contract.clip_frames
    s = contract.image_size
    crops = np.zeros((frames, s, s, 3), np.uint8)
    landmarks = np.full((frames, 68, 2), 0.5, np.float32)
    return crops, landmarks, contract.before if with_teacher else 0


def zero_example(contract, with_teacher: bool) -> bytes:
    """One serialized SequenceExample of a zero clip (what `serve_examples` takes)."""
    crops, landmarks, offset = zero_window(contract, with_teacher)
    return contract.example(crops, landmarks, offset)


def warmup_logs(contract, with_teacher: bool, batch_sizes=WARMUP_BATCH_SIZES) -> list:
    """The `PredictionLog`s of both signatures at each batch size."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    example = zero_example(contract, with_teacher)
    for batch in batch_sizes:
        default = prediction_log_pb2.PredictionLog()
        request = default.predict_log.request
        request.model_spec.signature_name = "serving_default"
        for name, (shape, dtype) in contract.shapes(batch, with_teacher).items():
            value = np.full(shape, 0.5 if dtype == "float32" else 0, dtype)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        examples = prediction_log_pb2.PredictionLog()
        request = examples.predict_log.request
        request.model_spec.signature_name = "serve_examples"
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example] * batch, tf.string))
        logs += [default, examples]
    return logs


def write_warmup_requests(version_dir: str, contract, with_teacher: bool) -> str:
    """Write the warm-up file into `version_dir` (a version being staged) and return its path."""
    import tensorflow as tf

    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_logs(contract, with_teacher):
            writer.write(log.SerializeToString())
    return path
