"""Checkpoints every N epochs (`EpochCheckpoint`), the epoch history (`HistoryCSV`), and TensorBoard
extras beside keras.callbacks.TensorBoard (which already writes every logged loss term, the
accuracies and `learning_rate` each epoch): per-class F1, UAR and a confusion-matrix image on the
validation split, and the fusion weights of the adaptive TPN flow.

Summaries go to the same run directories keras uses (`logs/validation`, `logs/train`), so
TensorBoard shows them next to the built-in curves.
"""

from __future__ import annotations

import csv
import io
import os

import keras
import numpy as np
import tensorflow as tf

from vtcaps_tf.evaluation import metrics
from vtcaps_tf.evaluation.figures import confusion_matrix_figure, figure_to_png
from vtcaps_tf.utils import atomic_files


class HistoryCSV(keras.callbacks.Callback):
    """`logs/history.csv`, one row per epoch, appended to across `--resume`d runs, the whole file
    replaced atomically at each epoch's end (`vtcaps_tf.utils.atomic_files`): a run killed while
    it writes leaves the previous epochs' file, never a cut row.

    The columns are Keras' CSVLogger's: the first epoch's log keys, sorted, with a `val_` twin of
    each when that epoch has no validation. A resumed run keeps the header's columns, with `NA`
    where an epoch has no value (its first epoch may validate where the first run's did not,
    `--validation-freq`)."""

    def __init__(self, filename, sep=","):
        super().__init__()
        self.filename = filename
        self.sep = sep
        self.keys = None
        self._rows = []

    def on_train_begin(self, logs=None):
        self.keys, self._rows = None, []
        if os.path.isfile(self.filename) and os.path.getsize(self.filename) > 0:
            with open(self.filename, newline="") as f:
                rows = list(csv.reader(f, delimiter=self.sep))
            if rows and rows[0][:1] == ["epoch"]:
                self.keys, self._rows = rows[0][1:], rows[1:]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
        self._rows.append([epoch] + [_csv_value(logs.get(k, "NA")) for k in self.keys])
        text = io.StringIO()
        writer = csv.writer(text, delimiter=self.sep, lineterminator="\n")
        writer.writerow(["epoch"] + self.keys)
        writer.writerows(self._rows)
        atomic_files.write_text(self.filename, text.getvalue())


def _csv_value(value):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return f"[{', '.join(map(str, value))}]"
    return value


class ValidationSummaries(keras.callbacks.Callback):
    """Each `freq` epochs: predicts the validation set and writes `f1/<class>`, `macro_f1`, `uar`
    scalars and a `confusion_matrix` image to `log_dir`."""

    def __init__(self, dataset, class_names, log_dir, freq=1):
        super().__init__()
        self.dataset = dataset
        self.class_names = [str(c) for c in class_names]
        self.log_dir = log_dir
        self.freq = int(freq)
        self._writer = None
        self._predict = None

    def _probabilities(self, inputs):
        if self._predict is None:
            # Traced once: an eager call runs op by op, and the graph keeps only what the
            # capsule probabilities need (not the teacher).
            def probabilities(x):
                out = self.model(x, training=False)
                return out["probabilities"] if isinstance(out, dict) else out

            self._predict = tf.function(probabilities, reduce_retracing=True)
        return self._predict(inputs)

    def _get_writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def predict_labels(self):
        """(true labels, predicted labels) over the whole validation set."""
        y_true, y_pred = [], []
        for inputs, labels in self.dataset:
            # A direct call: predict_on_batch under MirroredStrategy feeds every replica the batch.
            y_pred.append(np.argmax(np.asarray(self._probabilities(inputs)), axis=-1))
            y_true.append(np.asarray(labels))
        if not y_true:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(y_true), np.concatenate(y_pred)

    def on_epoch_end(self, epoch, logs=None):
        if self.freq <= 0 or (epoch + 1) % self.freq:
            return
        y_true, y_pred = self.predict_labels()
        report = metrics.classification_report(y_true, y_pred, self.class_names)
        png = figure_to_png(confusion_matrix_figure(
            report["confusion_matrix"], self.class_names, title=f"Confusion matrix, epoch {epoch + 1}"))
        with self._get_writer().as_default(step=epoch):
            for name in self.class_names:
                tf.summary.scalar(f"f1/{name}", report["per_class"][name]["f1"])
            tf.summary.scalar("macro_f1", report["macro_f1"])
            tf.summary.scalar("uar", report["uar"])
            tf.summary.image("confusion_matrix", tf.image.decode_png(png, channels=4)[None])
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def fusion_layers(model):
    """(path, layer) for every FastNormalizedFusion / SoftmaxFusion inside `model`."""
    from vtcaps_tf.layers import FastNormalizedFusion, SoftmaxFusion

    kinds = tuple(k for k in (FastNormalizedFusion, SoftmaxFusion) if isinstance(k, type))
    if not kinds:
        return []
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, kinds) and layer.built:
            found.append((getattr(layer, "path", None) or layer.name, layer))
    return found


class FusionWeightSummaries(keras.callbacks.Callback):
    """Each epoch: the raw `fusion_weights` and the normalised coefficients of every fusion node,
    as scalars `fusion/<layer path>/w<i>` and `fusion/<layer path>/coef<i>`."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        layers = fusion_layers(self.model)
        if not layers:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=epoch):
            for path, layer in layers:
                raw = np.asarray(keras.ops.convert_to_numpy(layer.fusion_weights))
                coef = np.asarray(keras.ops.convert_to_numpy(layer.normalized_weights()))
                for i, (w, c) in enumerate(zip(raw, coef)):
                    tf.summary.scalar(f"fusion/{path}/w{i}", float(w))
                    tf.summary.scalar(f"fusion/{path}/coef{i}", float(c))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class OptimizerStepLogger(keras.callbacks.Callback):
    """Adds `optimizer_step` (the optimizer's `iterations`) to each epoch's logs, so the CSV
    history and TensorBoard show that a resumed run continues the step count."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.model.optimizer is not None:
            logs["optimizer_step"] = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))


class SkippedClipsLogger(keras.callbacks.Callback):
    """Adds `skipped_clips` (clips of corrupt shards left out by --skip-corrupt-records; -1 when
    the metadata does not say how many) to each epoch's logs: the history and TensorBoard."""

    def __init__(self, skipped: int | None):
        super().__init__()
        self.skipped = -1 if skipped is None else int(skipped)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["skipped_clips"] = self.skipped


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves `checkpoint` (a `vtcaps_tf.train.setup.RunCheckpoint`) every `every` epochs and after
    the last of `epochs`, recording the number of finished epochs; a resumed run repeats at most
    `every - 1` epochs."""

    def __init__(self, checkpoint, every: int = 1, epochs: int | None = None):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.checkpoint = checkpoint
        self.every = int(every)
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            self.checkpoint.save(epoch + 1)


class PreemptionCheckpoint(keras.callbacks.Callback):
    """After every step: when `watch` (a `vtcaps_tf.train.preemption.PreemptionWatch`) saw SIGTERM,
    save `checkpoint` with the finished epochs and the steps of this one, and raise
    PreemptedError (fit stops there, before the epoch's end callbacks). At an epoch's last step
    the epoch ends first (its validation, history row and checkpoint), then the run stops; after
    the run's last epoch it completes. The last callback of the list, so that a signal that came
    during a step is seen at that step's end. `first_step`: steps of the first epoch a resumed fit
    had trained before it started (its batches count from there)."""

    def __init__(self, watch, checkpoint, steps_per_epoch: int, epochs: int, first_epoch: int = 0,
                 first_step: int = 0):
        super().__init__()
        self.watch, self.checkpoint = watch, checkpoint
        self.steps, self.epochs = int(steps_per_epoch), int(epochs)
        self.first_epoch, self.first_step = int(first_epoch), int(first_step)
        self._epoch = self.first_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1 + (self.first_step if self._epoch == self.first_epoch else 0)
        if self.watch.requested and done < self.steps:
            self._stop(self._epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        if self.watch.requested and epoch + 1 < self.epochs:
            self._stop(epoch + 1, 0)

    def _stop(self, finished_epochs, done):
        from vtcaps_tf.train.preemption import preempted

        path = self.checkpoint.save_step(finished_epochs, done)
        raise preempted(finished_epochs, done, self.steps, path)
