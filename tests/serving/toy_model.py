"""A small SavedModel with the exported model's signatures (docs/design.md section 10), for server tests.

`serving_default(frames uint8 [B,N,S,S,3], landmarks float32 [B,N,68,2], long_frames uint8
[B,M,S,S,3])` (a with-teacher export's inputs) -> probabilities, capsule_lengths, classes,
tpn_probabilities; `serve_examples(examples string [B])`: schema-2 SequenceExamples decoded by the
input contract, then the same head;
`echo(data string [B])` -> data_bytes (the bytes back) and size. `reference()` recomputes
serving_default in numpy, independently of TensorFlow. `write_toy_saved_model(...,
with_teacher=False)` writes the default export's inputs instead (no `long_frames`: the head reads
the short clip's colour in its place), a model the TFLite converter takes.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vtcaps_tf.data.contract import InputContract

N, M, S, C = 4, 8, 16, 3
CONTRACT = InputContract(N, M, S)
CLASSES = ["happy", "sad", "surprise"]


def _weights(bias: float):
    rng = np.random.default_rng(7)
    return rng.normal(size=(7, C)).astype(np.float32) * 3.0, np.full([C], bias, np.float32) * \
        np.arange(C, dtype=np.float32)


class ToyModel(tf.Module):
    def __init__(self, bias: float):
        super().__init__()
        w, b = _weights(bias)
        self.w = tf.Variable(w)
        self.b = tf.Variable(b)
        self.class_names = tf.constant(CLASSES)

    def _head(self, feat):
        logits = tf.matmul(feat, self.w) + self.b
        batch = tf.shape(feat)[0]
        return {
            "probabilities": tf.nn.softmax(logits),
            "capsule_lengths": tf.sigmoid(logits),
            "classes": tf.tile(self.class_names[None], [batch, 1]),
            "tpn_probabilities": tf.nn.softmax(2.0 * logits),
        }

    @tf.function(input_signature=[
        tf.TensorSpec([None, N, S, S, 3], tf.uint8, name="frames"),
        tf.TensorSpec([None, N, 68, 2], tf.float32, name="landmarks"),
        tf.TensorSpec([None, M, S, S, 3], tf.uint8, name="long_frames")])
    def serve(self, frames, landmarks, long_frames):
        return self._features(frames, landmarks, long_frames)

    def _features(self, frames, landmarks, long_frames):
        x = tf.reduce_mean(tf.cast(frames, tf.float32) / 255.0, axis=[1, 2, 3])
        y = tf.reduce_mean(landmarks, axis=[1, 2, 3])[:, None]
        z = tf.reduce_mean(tf.cast(long_frames, tf.float32) / 255.0, axis=[1, 2, 3])
        return self._head(tf.concat([x, y, z], axis=1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        spec = {k: tf.TensorSpec(shape[1:], dtype) for k, (shape, dtype) in CONTRACT.shapes().items()}
        x = tf.map_fn(lambda e: CONTRACT.parse_example(e)[0], examples, fn_output_signature=spec)
        return self._features(x["frames"], x["landmarks"], x["long_frames"])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data")])
    def echo(self, data):
        return {"data_bytes": tf.identity(data), "size": tf.strings.length(data)}


class TeacherFreeToyModel(ToyModel):
    def _head(self, feat):
        out = super()._head(feat)
        del out["tpn_probabilities"]  # no teacher, no TPN head: as the default export
        return out

    @tf.function(input_signature=[
        tf.TensorSpec([None, N, S, S, 3], tf.uint8, name="frames"),
        tf.TensorSpec([None, N, 68, 2], tf.float32, name="landmarks")])
    def serve(self, frames, landmarks):
        return self._features(frames, landmarks, frames)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        spec = {k: tf.TensorSpec(shape[1:], dtype)
                for k, (shape, dtype) in CONTRACT.shapes(with_teacher=False).items()}
        x = tf.map_fn(lambda e: CONTRACT.parse_example(e, with_teacher=False)[0], examples,
                      fn_output_signature=spec)
        return self._features(x["frames"], x["landmarks"], x["frames"])


def write_toy_saved_model(path: str, bias: float = 0.0, with_teacher: bool = True) -> str:
    model = ToyModel(bias) if with_teacher else TeacherFreeToyModel(bias)
    tf.saved_model.save(model, path, signatures={
        "serving_default": model.serve.get_concrete_function(),
        "serve_examples": model.serve_examples.get_concrete_function(),
        "echo": model.echo.get_concrete_function()})
    return path


def reference(inputs: dict, bias: float = 0.0) -> dict:
    """serving_default in numpy (without `long_frames`: as the teacher-free toy, the frames)."""
    w, b = _weights(bias)
    x = (inputs["frames"].astype(np.float64) / 255.0).mean(axis=(1, 2, 3))
    y = inputs["landmarks"].astype(np.float64).mean(axis=(1, 2, 3))[:, None]
    z = (inputs.get("long_frames", inputs["frames"]).astype(np.float64) / 255.0).mean(axis=(1, 2, 3))
    logits = np.concatenate([x, y, z], axis=1) @ w + b

    def softmax(v):
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return {"probabilities": softmax(logits), "capsule_lengths": 1 / (1 + np.exp(-logits)),
            "tpn_probabilities": softmax(2 * logits)}


def random_inputs(batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "frames": rng.integers(0, 256, (batch, N, S, S, 3), dtype=np.uint8),
        "landmarks": rng.random((batch, N, 68, 2), dtype=np.float32),
        "long_frames": rng.integers(0, 256, (batch, M, S, S, 3), dtype=np.uint8),
    }
