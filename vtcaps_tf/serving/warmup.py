"""Warm-up of a loaded version before it is AVAILABLE, as TF Serving does it.

With `assets.extra/tf_serving_warmup_requests` (written by `vtcaps export`), its `PredictionLog`s
(predict, classify and regress logs; at most 1000) are replayed `iterations` times each through
the version's signatures, batching included; a record that fails fails the load, as in TF
Serving. Without the file, one zero batch goes through each signature whose inputs have known
shapes, and through a vtcaps export's `serve_examples` one zero clip record; a failure there is
logged and the version serves anyway. `metrics` gets the time as `model_warmup_latency`.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from vtcaps_tf.export.warmup_requests import MAX_WARMUP_RECORDS, WARMUP_FILE
from vtcaps_tf.serving.errors import ServingError

log = logging.getLogger(__name__)


class WarmupError(Exception):
    """A warm-up record that cannot be replayed: the version does not load."""


def read_warmup_logs(path: str) -> list:
    """The `PredictionLog`s of a warm-up file (WarmupError beyond TF Serving's 1000 records)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for record in tf.data.TFRecordDataset(path):
        if len(logs) == MAX_WARMUP_RECORDS:
            raise WarmupError(f"{path} holds more than {MAX_WARMUP_RECORDS} warm-up records")
        logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    return logs


def replay(servable, prediction_log) -> bool:
    """Run one warm-up record on `servable`; False for a kind of log not replayed."""
    from vtcaps_tf.serving import inference, predictor

    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        predictor.run_predict(servable, prediction_log.predict_log.request)
    elif kind in ("classify_log", "regress_log"):
        request = getattr(prediction_log, kind).request
        find = inference.classification_signature if kind == "classify_log" else inference.regression_signature
        sig, _ = find(servable, request.model_spec.signature_name or None)
        run = inference.classification_result if kind == "classify_log" else inference.regression_result
        run(sig, inference.serialized_examples(request.input))
    else:
        return False
    return True


def _zero_inputs(servable, sig) -> dict | None:
    """One zero batch for `sig`, or None when its inputs leave the shapes open."""
    if sig.crop_size is not None:
        from vtcaps_tf.data.contract import InputContract
        from vtcaps_tf.export.warmup_requests import zero_example

        inputs = servable.signatures["serving_default"].inputs
        n = inputs["frames"].shape[1]
        m = inputs["long_frames"].shape[1] if "long_frames" in inputs else n
        example = zero_example(InputContract(n, m, sig.crop_size), "long_frames" in inputs)
        return {"examples": np.array([example], dtype=object)}
    specs = list(sig.inputs.values())
    if not specs or any(s.shape is None or s.dtype == object or None in s.shape[1:] for s in specs):
        return None
    return {s.name: np.zeros((1,) + s.shape[1:], s.dtype) for s in specs}


def warm_up(servable, iterations: int = 1, metrics=None) -> None:
    """Warm `servable` up (module docstring); raises WarmupError when its warm-up file fails."""
    path = os.path.join(servable.path, WARMUP_FILE)
    t0 = time.perf_counter()
    status = "OK"
    try:
        if os.path.isfile(path):
            logs = read_warmup_logs(path)
            for prediction_log in logs:
                for _ in range(iterations):
                    try:
                        if not replay(servable, prediction_log):
                            log.warning("%s: %s records are not replayed", path,
                                        prediction_log.WhichOneof("log_type"))
                            break
                    except ServingError as err:
                        raise WarmupError(f"warm-up record of {path} failed: {err.message}") from None
            log.info("model %s v%d: replayed %d warm-up records x%d", servable.name, servable.version,
                     len(logs), iterations)
            return
        for sig in servable.signatures.values():
            inputs = _zero_inputs(servable, sig)
            if inputs is None:
                continue
            try:
                sig.run(inputs)
            except ServingError as err:
                log.warning("warm-up of %s v%d signature %s failed: %s",
                            servable.name, servable.version, sig.name, err.message)
    except BaseException:
        status = "ERROR"
        raise
    finally:
        if metrics is not None:
            metrics.warmup_latency.labels(servable.path, status).observe((time.perf_counter() - t0) * 1e6)
