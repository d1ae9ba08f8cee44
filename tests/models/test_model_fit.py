"""Plain `fit` trains the model: under MirroredStrategy with 2 CPU replicas, and to 100% training
accuracy on a small fixed set."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import random_inputs
from vtcaps_tf.models import build_model
from vtcaps_tf.train.fit import make_strategy

TERMS = ("margin_loss", "reconstruction_loss", "tpn_loss", "aux_loss", "matching_loss")


@pytest.mark.slow  # tracing the two-replica train and test steps of the full model takes minutes here
def test_fit_under_mirrored_strategy_with_two_cpu_replicas():
    assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest should make two logical CPUs"
    strategy = make_strategy(2)
    assert strategy.num_replicas_in_sync == 2
    reference = build_model("tiny")
    with strategy.scope():
        model = build_model("tiny")
        model.set_weights(reference.get_weights())
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    reference.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    x = random_inputs(model.config, 8, seed=11)
    y = np.arange(8) % 7

    # Inference-mode loss: the same whether the batch is split over two replicas or not, so the
    # per-replica scaling and the metric aggregation are right.
    two = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    one = reference.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    for key in ("loss",) + TERMS:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, err_msg=key)

    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    for key in ("loss", "accuracy", "tpn_accuracy") + TERMS:
        assert key in history and all(np.isfinite(history[key])), key
    moved = [not np.array_equal(a, np.array(w)) for a, w in zip(before, model.trainable_weights)]
    assert sum(moved) > 0.9 * len(moved)


class _StopAtFullAccuracy(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = 0
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = epoch + 1
        self.ends.append(time.perf_counter())
        if logs["accuracy"] >= 1.0:
            self.model.stop_training = True


@pytest.mark.slow
def test_tiny_overfits_32_random_clips():
    keras.utils.set_random_seed(0)
    model = build_model("tiny")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    x = random_inputs(model.config, 32, seed=0)
    y = np.arange(32) % 7
    stop = _StopAtFullAccuracy()
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=8, epochs=75, verbose=0, callbacks=[stop]).history
    seconds = time.perf_counter() - start
    steps = stop.epochs * 4
    inference = np.mean(np.argmax(model.predict(x, batch_size=8, verbose=0)["probabilities"], -1) == y)
    print(f"tiny overfit: training accuracy {history['accuracy'][-1]:.3f} after {steps} steps, "
          f"{seconds:.1f} s (first epoch, with graph building, {stop.ends[0] - start:.1f} s; "
          f"later steps {(stop.ends[-1] - stop.ends[0]) / max(1, steps - 4):.2f} s each); "
          f"inference-mode accuracy on the same clips {inference:.3f}")
    assert history["accuracy"][-1] == 1.0, f"accuracy {history['accuracy'][-1]} after {steps} steps"
    assert steps <= 300
    for key in ("loss",) + TERMS:
        assert all(np.isfinite(history[key])), key
