"""TF Serving's two small config messages the tensorflow-serving-api wheel lacks, with TF Serving's
package, field names and numbers, so that the same text-format files work with both servers:

- `tensorflow.serving.BatchingParameters` (session_bundle_config.proto), read from
  `--batching_parameters_file`;
- `tensorflow.serving.MonitoringConfig` with its `PrometheusConfig` (monitoring_config.proto),
  read from `--monitoring_config_file`.

The messages are built from descriptors in a private descriptor pool (no protoc step, nothing
registered in the process-wide pool), then parsed by protobuf's own text-format parser.
"""

from __future__ import annotations

import dataclasses

from vtcaps_tf.errors import UsageError

PACKAGE = "tensorflow.serving"
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# TF Serving's defaults (SharedBatchScheduler's QueueOptions) for the fields a file leaves out;
# the number of batch threads defaults to the machine's parallelism there, to the CPU count here.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10

# (name, field number, type): TF Serving's numbers; a *Value type is the google.protobuf wrapper.
_BATCHING_FIELDS = (
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"),
    ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"),
    ("allowed_batch_sizes", 6, "repeated int64"),
    ("pad_variable_length_inputs", 7, "bool"),
)


class ConfigProtoError(UsageError):
    """A batching or monitoring file that cannot be used (bad input: exit status 2)."""


def _message_classes():
    """{name: message class} for BatchingParameters, PrometheusConfig, MonitoringConfig."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(name="vtcaps/tf_serving_configs.proto", package=PACKAGE,
                                              syntax="proto3", dependency=[wrappers.name])
    batching = file.message_type.add(name="BatchingParameters")
    for name, number, kind in _BATCHING_FIELDS:
        field = batching.field.add(name=name, number=number, json_name=name)
        if kind.endswith("Value"):
            field.type, field.type_name, field.label = F.TYPE_MESSAGE, f".google.protobuf.{kind}", F.LABEL_OPTIONAL
        elif kind == "repeated int64":
            field.type, field.label = F.TYPE_INT64, F.LABEL_REPEATED
        else:
            field.type, field.label = F.TYPE_BOOL, F.LABEL_OPTIONAL
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                         type_name=f".{PACKAGE}.PrometheusConfig")
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in ("BatchingParameters", "PrometheusConfig", "MonitoringConfig")}


def _parse(path: str, message_name: str, flag: str):
    from google.protobuf import text_format

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ConfigProtoError(f"{flag}: cannot read {path}: {err.strerror}") from None
    message = _message_classes()[message_name]()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise ConfigProtoError(f"{flag}: {path} is not a {message_name} in text format: {err}") from None
    return message


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters as the batcher uses them (`vtcaps_tf.serving.batching`)."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = 0  # 0: the machine's CPU count
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        if self.max_batch_size < 1 or self.max_enqueued_batches < 1 or self.num_batch_threads < 0:
            raise ValueError("max_batch_size and max_enqueued_batches must be at least 1 and "
                             "num_batch_threads not negative")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must not be negative, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            # TF Serving's checks: increasing, positive, the last one max_batch_size.
            if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
                raise ValueError(f"allowed_batch_sizes must be positive and increasing, got {list(sizes)}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(f"the last of allowed_batch_sizes ({sizes[-1]}) must equal "
                                 f"max_batch_size ({self.max_batch_size})")

    @property
    def threads(self) -> int:
        import os

        return self.num_batch_threads or os.cpu_count() or 1


def batching_options(message) -> BatchingOptions:
    """A BatchingParameters message -> BatchingOptions (unset wrapper fields take the defaults)."""
    d = BatchingOptions()

    def value(name, default):
        return getattr(message, name).value if message.HasField(name) else default

    try:
        return BatchingOptions(
            max_batch_size=value("max_batch_size", d.max_batch_size),
            batch_timeout_micros=value("batch_timeout_micros", d.batch_timeout_micros),
            max_enqueued_batches=value("max_enqueued_batches", d.max_enqueued_batches),
            num_batch_threads=value("num_batch_threads", d.num_batch_threads),
            thread_pool_name=value("thread_pool_name", d.thread_pool_name),
            allowed_batch_sizes=tuple(message.allowed_batch_sizes),
            pad_variable_length_inputs=message.pad_variable_length_inputs)
    except ValueError as err:
        raise ConfigProtoError(f"batching parameters: {err}") from None


def read_batching_parameters(path: str) -> BatchingOptions:
    return batching_options(_parse(path, "BatchingParameters", "--batching_parameters_file"))


def read_monitoring_config(path: str) -> str | None:
    """The Prometheus path of a MonitoringConfig file (TF Serving's default path when the file
    enables it without one); None when it leaves Prometheus off."""
    config = _parse(path, "MonitoringConfig", "--monitoring_config_file").prometheus_config
    if not config.enable:
        return None
    path_ = config.path or DEFAULT_PROMETHEUS_PATH
    if not path_.startswith("/"):
        raise ConfigProtoError(f"--monitoring_config_file: prometheus_config path must start with '/', "
                               f"got {path_!r}")
    return path_
