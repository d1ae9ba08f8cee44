"""The server's Prometheus metrics, with TF Serving's names and labels, in a registry of its own
(one per server: two servers in one process never mix their counts).

  :tensorflow:serving:request_count{model_name,status}                  requests answered
  :tensorflow:serving:request_latency{model_name,API,entrypoint}        microseconds, whole request
  :tensorflow:serving:runtime_latency{model_name,API,runtime}           microseconds, the model call
  :tensorflow:serving:batching_session:queuing_latency{thread_pool_name} microseconds in the queue
  :tensorflow:serving:batching_session:processed_batch_size{thread_pool_name} tasks' rows per call
  :tensorflow:serving:model_warmup_latency{model_path,status}           microseconds, per version

`prometheus_client` writes a counter's name with `_total` appended; TF Serving's counter has no
suffix, so `request_count` is exposed as an untyped family under TF Serving's exact name (queries
and dashboards written for TF Serving find it).
"""

from __future__ import annotations

import contextlib
import threading
import time

PREFIX = ":tensorflow:serving:"
# Microseconds: TF Serving's exponential buckets (10 us growing by 1.8) up to about 15 minutes.
LATENCY_BUCKETS_US = tuple(10.0 * 1.8 ** i for i in range(33))
BATCH_SIZE_BUCKETS = tuple(float(2 ** i) for i in range(14))


class _RequestCounts:
    """`request_count` under TF Serving's exact name (see the module docstring)."""

    def __init__(self):
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def inc(self, model_name: str, status: str):
        with self._lock:
            key = (model_name, status)
            self._counts[key] = self._counts.get(key, 0) + 1

    def collect(self):
        from prometheus_client.core import Metric

        metric = Metric(PREFIX + "request_count", "The total number of requests.", "unknown")
        with self._lock:
            items = sorted(self._counts.items())
        for (model_name, status), count in items:
            metric.add_sample(metric.name, {"model_name": model_name, "status": status}, count)
        yield metric


class ServingMetrics:
    """The metrics of one server; `exposition()` is the text a scrape gets."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.request_count = _RequestCounts()
        self.registry.register(self.request_count)

        def histogram(name, doc, labels, buckets=LATENCY_BUCKETS_US):
            return Histogram(PREFIX + name, doc, labels, registry=self.registry, buckets=buckets)

        self.request_latency = histogram("request_latency", "Distribution of wall time (in microseconds) "
                                         "for Tensorflow Serving request.", ["model_name", "API", "entrypoint"])
        self.runtime_latency = histogram("runtime_latency", "Distribution of wall time (in microseconds) "
                                         "for Tensorflow Runtime.", ["model_name", "API", "runtime"])
        self.queuing_latency = histogram("batching_session:queuing_latency", "Distribution of wall time "
                                         "spent (in microseconds) in queuing", ["thread_pool_name"])
        self.processed_batch_size = histogram("batching_session:processed_batch_size",
                                              "Tracks the batch size distribution on processing.",
                                              ["thread_pool_name"], BATCH_SIZE_BUCKETS)
        self.warmup_latency = histogram("model_warmup_latency", "Distribution of wall time (in "
                                        "microseconds) for warming up the model.", ["model_path", "status"])

    @contextlib.contextmanager
    def request(self, model_name: str, api: str, entrypoint: str):
        """Count one request and time it; the status is OK, or the code of the ServingError raised
        (any other exception counts as INTERNAL)."""
        from vtcaps_tf.serving.errors import ServingError

        t0 = time.perf_counter()
        status = "OK"
        try:
            yield
        except ServingError as err:
            status = err.code
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            self.request_count.inc(model_name or "", status)
            self.request_latency.labels(model_name or "", api, entrypoint).observe(
                (time.perf_counter() - t0) * 1e6)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def track(metrics: ServingMetrics | None, model_name: str, api: str, entrypoint: str):
    """`metrics.request(...)`, or nothing to record when the server keeps no metrics."""
    return contextlib.nullcontext() if metrics is None else metrics.request(model_name, api, entrypoint)
