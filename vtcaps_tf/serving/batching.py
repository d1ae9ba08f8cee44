"""Request batching with TF Serving's semantics (BasicBatchScheduler + BatchingSession).

Each signature of a loaded version that batches has one `Batcher`. A request (a task: named input
arrays sharing their 0-th dimension, its rows) joins the newest open batch when its rows fit
under `max_batch_size` (and its other dimensions match, unless `pad_variable_length_inputs`),
else opens a new batch. A batch runs when it is full, or once its oldest task has waited
`batch_timeout_micros`, on one of `num_batch_threads` threads; the tasks' inputs are
concatenated (padded up to the next of `allowed_batch_sizes` by repeating the first row, as TF
Serving pads), the signature runs once, and each task gets its rows of every output. More than
`max_enqueued_batches` batches waiting answers UNAVAILABLE at once (HTTP 503); a task of more rows
than `max_batch_size` is an invalid argument, as in TF Serving without large-batch splitting.
Once stopped (its version unloaded), a Batcher runs the batches it holds and then each call alone.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import numpy as np

from vtcaps_tf.serving.config_protos import BatchingOptions
from vtcaps_tf.serving.errors import ServingError, invalid

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    enqueued: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: dict | None = None
    error: ServingError | None = None


@dataclasses.dataclass
class _Batch:
    tasks: list
    rows: int
    shapes: tuple  # the tasks' non-batch shapes (None when padding makes them free)
    opened: float


def task_rows(inputs: dict[str, np.ndarray]) -> int | None:
    """The shared 0-th dimension of a request's inputs; None when they have none to batch on."""
    sizes = {arr.shape[0] if arr.ndim else None for arr in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    return sizes.pop()


def pad_to(arr: np.ndarray, shape: tuple) -> np.ndarray:
    """`arr` grown to `shape` (each dimension at least as large), the new cells holding its first
    element: TF Serving's padding of variable-length inputs."""
    if arr.shape == tuple(shape):
        return arr
    out = np.full(shape, arr.flat[0] if arr.size else np.zeros((), arr.dtype), dtype=arr.dtype)
    out[tuple(slice(0, n) for n in arr.shape)] = arr
    return out


class Batcher:
    """Merges concurrent calls of `function` ({name: array} -> {name: array}, all outputs with
    the batch as 0-th dimension) into batches; `metrics` (`ServingMetrics` or None) gets the
    queuing latency and each processed batch size."""

    def __init__(self, function, options: BatchingOptions, metrics=None, name: str = ""):
        self.function = function
        self.options = options
        self.metrics = metrics
        self.name = name
        self.calls = 0  # batches processed: merged calls of `function`
        self._batches: list[_Batch] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"vtcaps-batch-{name}-{i}", daemon=True)
                         for i in range(options.threads)]
        for thread in self._threads:
            thread.start()

    # --- the request side
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = task_rows(inputs)
        if rows is None or rows == 0:
            return self.function(inputs)  # nothing to batch on: runs alone
        if rows > self.options.max_batch_size:
            raise invalid(f"Task size {rows} is larger than maximum batch size {self.options.max_batch_size}")
        task = _Task(inputs, rows, time.monotonic())
        # Tasks merge when their non-batch shapes match; with padding, when their ranks do.
        shapes = tuple(sorted((k, v.ndim, v.dtype.str) for k, v in inputs.items())) \
            if self.options.pad_variable_length_inputs else \
            tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))
        with self._cond:
            # Once stopped (the version was unloaded), the requests still holding it run alone.
            alone = self._stopping
            last = self._batches[-1] if self._batches else None
            if alone:
                pass
            elif last is not None and last.shapes == shapes and last.rows + rows <= self.options.max_batch_size:
                last.tasks.append(task)
                last.rows += rows
            elif len(self._batches) >= self.options.max_enqueued_batches:
                raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was "
                                   "submitted is full")
            else:
                self._batches.append(_Batch([task], rows, shapes, task.enqueued))
            self._cond.notify_all()
        if alone:
            return self.function(inputs)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    # --- the batch threads
    def _ready(self, now: float) -> float | None:
        """0 when the first batch should run now, else seconds to wait (None: no batch)."""
        if not self._batches:
            return None
        first = self._batches[0]
        if self._stopping or first.rows >= self.options.max_batch_size or len(self._batches) > 1:
            return 0.0
        return max(0.0, first.opened + self.options.batch_timeout_micros / 1e6 - now)

    def _work(self):
        while True:
            with self._cond:
                while True:
                    wait = self._ready(time.monotonic())
                    if wait == 0.0:
                        batch = self._batches.pop(0)
                        break
                    if wait is None and self._stopping:
                        return
                    self._cond.wait(wait)
            self._process(batch)

    def _process(self, batch: _Batch):
        now = time.monotonic()
        pool = self.options.thread_pool_name
        if self.metrics is not None:
            for task in batch.tasks:
                self.metrics.queuing_latency.labels(pool).observe((now - task.enqueued) * 1e6)
            self.metrics.processed_batch_size.labels(pool).observe(batch.rows)
        try:
            outputs = self.function(self._merge(batch))
            self.calls += 1
            start = 0
            for task in batch.tasks:
                task.outputs = {k: v[start:start + task.rows] if v.ndim and v.shape[0] >= start + task.rows else v
                                for k, v in outputs.items()}
                start += task.rows
        except ServingError as err:
            for task in batch.tasks:
                task.error = err
        except Exception as err:  # noqa: BLE001 - every waiting request gets an answer
            log.exception("batch of %s failed", self.name)
            for task in batch.tasks:
                task.error = ServingError("INTERNAL", f"batch failed: {err}")
        for task in batch.tasks:
            task.done.set()

    def _merge(self, batch: _Batch) -> dict[str, np.ndarray]:
        tasks = batch.tasks
        target = self.padded_size(batch.rows)
        merged = {}
        for key in tasks[0].inputs:
            parts = [t.inputs[key] for t in tasks]
            if self.options.pad_variable_length_inputs:
                inner = tuple(max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim))
                parts = [pad_to(p, (p.shape[0],) + inner) for p in parts]
            arr = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if target > arr.shape[0]:
                arr = np.concatenate([arr, np.repeat(arr[:1], target - arr.shape[0], axis=0)])
            merged[key] = arr
        return merged

    def padded_size(self, rows: int) -> int:
        """The smallest allowed batch size holding `rows` (rows itself when any size is allowed)."""
        for size in self.options.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows

    def stop(self, timeout: float = 30.0):
        """Run the batches already queued, then end the threads; later calls run alone."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
