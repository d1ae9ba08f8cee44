"""A TF-Serving-compatible model server (REST on 8501, gRPC on 8500): `ModelServer`, and
`serve_until_stopped`, the run of `vtcaps serve` (`vtcaps_tf.cli.serve` holds its flags).

Light at load (the standard library): the REST and gRPC servers and the model manager load when
a server starts.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import threading

from vtcaps_tf.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 << 20


@dataclasses.dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    rest_port: int | None = 8501  # None: no REST; 0: a free port
    grpc_port: int | None = 8500  # None: no gRPC; 0: a free port
    poll_wait_seconds: float = 1.0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Warm-up before a version is AVAILABLE: its assets.extra/tf_serving_warmup_requests replayed
    # `warmup_iterations` times, or without that file one zero batch per signature.
    warmup: bool = True
    warmup_iterations: int = 1
    # TF Serving's request batching: BatchingParameters from the file, or its defaults.
    enable_batching: bool = False
    batching_parameters_file: str | None = None
    # A MonitoringConfig file enabling the Prometheus endpoint on the REST port.
    monitoring_config_file: str | None = None
    # SIGTERM: REST and gRPC stop accepting, and the requests in flight get this long to finish.
    drain_timeout_seconds: float = 10.0
    grpc_workers: int = 16
    model_config_file: str | None = None  # re-read every config_poll_wait_seconds when > 0
    config_poll_wait_seconds: float = 0.0
    grpc_channel_arguments: tuple = ()  # extra gRPC server options, (key, value) pairs
    grpc_socket_path: str | None = None  # also serve gRPC on this Unix socket
    # A version's model.tflite answers in place of its SavedModel (TF Serving's flags of these names).
    prefer_tflite_model: bool = False
    num_tflite_pools: int = 1
    num_tflite_interpreters_per_pool: int = 1

    def tflite_options(self):
        """The TFLite flags as `tflite_signatures.TFLiteOptions`."""
        from vtcaps_tf.serving.tflite_signatures import TFLiteOptions

        return TFLiteOptions(self.prefer_tflite_model, self.num_tflite_pools,
                             self.num_tflite_interpreters_per_pool)

    def batching_options(self):
        """`config_protos.BatchingOptions` when batching is on (None: off); ConfigProtoError (a
        UsageError) for a parameters file without batching, or one that cannot be used."""
        from vtcaps_tf.serving.config_protos import BatchingOptions, ConfigProtoError, read_batching_parameters

        if not self.enable_batching:
            if self.batching_parameters_file:
                raise ConfigProtoError("--batching_parameters_file needs --enable_batching")
            return None
        if self.batching_parameters_file:
            return read_batching_parameters(self.batching_parameters_file)
        return BatchingOptions()

    def prometheus_path(self) -> str | None:
        """The metrics path of the monitoring config file (None: no metrics endpoint)."""
        from vtcaps_tf.serving.config_protos import read_monitoring_config

        return read_monitoring_config(self.monitoring_config_file) if self.monitoring_config_file else None


class ModelServer:
    """Model manager + REST + gRPC. `start()` loads the models and binds; `stop()` shuts down."""

    def __init__(self, specs, config: ServerConfig | None = None):
        from vtcaps_tf.serving.servables import ModelManager

        from vtcaps_tf.serving.metrics import ServingMetrics

        self.config = config or ServerConfig()
        self.metrics_path = self.config.prometheus_path()
        self.metrics = ServingMetrics() if self.metrics_path else None
        warmup = None
        if self.config.warmup:
            from vtcaps_tf.serving.warmup import warm_up

            warmup = functools.partial(warm_up, iterations=self.config.warmup_iterations, metrics=self.metrics)
        self.manager = ModelManager(specs, self.config.poll_wait_seconds, warmup,
                                    self.config.tflite_options(), self.config.batching_options(),
                                    self.metrics)
        self._rest = None
        self._rest_thread = None
        self._grpc = None
        self._watcher = None
        self._specs = list(specs)
        self.rest_port = None
        self.grpc_port = None

    def start(self):
        from vtcaps_tf.serving.rest import RestServer

        self.manager.start()
        cfg = self.config
        try:
            if cfg.grpc_port is not None or cfg.grpc_socket_path:
                from vtcaps_tf.serving.grpc_service import make_grpc_server

                self._grpc, self.grpc_port = make_grpc_server(
                    self.manager, None if cfg.grpc_port is None else f"{cfg.host}:{cfg.grpc_port}",
                    cfg.max_request_bytes, cfg.grpc_workers, cfg.grpc_channel_arguments,
                    cfg.grpc_socket_path, self.metrics)
                self._grpc.start()
            if cfg.rest_port is not None:
                try:
                    self._rest = RestServer((cfg.host, cfg.rest_port), self.manager, cfg.max_request_bytes,
                                            self.metrics, self.metrics_path)
                except OSError as err:  # say which address: the bare error names none
                    raise OSError(err.errno, f"cannot bind the REST API to {cfg.host}:{cfg.rest_port}: "
                                             f"{err.strerror}") from err
                self.rest_port = self._rest.server_address[1]
                self._rest_thread = threading.Thread(target=self._rest.serve_forever,
                                                     name="vtcaps-rest", daemon=True)
                self._rest_thread.start()
            if cfg.model_config_file and cfg.config_poll_wait_seconds > 0:
                from vtcaps_tf.serving.config_file import ConfigFileWatcher

                self._watcher = ConfigFileWatcher(cfg.model_config_file, self.manager,
                                                  cfg.config_poll_wait_seconds, self._specs).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float | None = None):
        """Stop accepting on REST and gRPC at once, let the requests in flight finish (up to
        `grace` seconds, default the config's drain timeout), then unload the models."""
        grace = self.config.drain_timeout_seconds if grace is None else grace
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        grpc_done = self._grpc.stop(grace) if self._grpc is not None else None
        if self._rest is not None:
            if not self._rest.drain(grace):
                log.warning("REST requests still running after the %g s drain timeout", grace)
            self._rest = None
        if grpc_done is not None:
            grpc_done.wait()
            self._grpc = None
        self.manager.stop()

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.rest_port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def model_specs(model_base_path: str | None = None, model_config_file: str | None = None,
                model_name: str | None = None) -> list:
    """The models to serve (`ModelSpec`s): one from `model_base_path` (named `model_name`, default
    the folder's name), or those of a TF Serving `model_config_file`. Raises UsageError unless
    exactly one of the two is given, or when the config file cannot be read or used."""
    from vtcaps_tf.serving.servables import ModelSpec

    if bool(model_base_path) == bool(model_config_file):
        raise UsageError("give exactly one of a model base path or a model config file")
    if model_config_file:
        from vtcaps_tf.serving.config_file import read_model_config_file

        return read_model_config_file(model_config_file)  # ConfigFileError is a UsageError
    name = model_name or os.path.basename(os.path.normpath(model_base_path))
    try:
        return [ModelSpec(name, model_base_path)]
    except ValueError as err:
        raise UsageError(str(err)) from None


def check_config(config: ServerConfig) -> None:
    """Raise UsageError for a configuration no server can run with."""
    if config.max_request_bytes <= 0:
        raise UsageError(f"max_request_bytes must be positive, got {config.max_request_bytes}")
    if config.rest_port is None and config.grpc_port is None and not config.grpc_socket_path:
        raise UsageError("both REST and gRPC are disabled: nothing to serve")
    if config.config_poll_wait_seconds > 0 and not config.model_config_file:
        raise UsageError("config_poll_wait_seconds > 0 needs a model_config_file to re-read")
    if config.warmup_iterations < 1:
        raise UsageError(f"num_request_iterations_for_warmup must be at least 1, got {config.warmup_iterations}")
    if config.drain_timeout_seconds < 0:
        raise UsageError(f"drain timeout must not be negative, got {config.drain_timeout_seconds}")
    try:
        config.tflite_options()
    except ValueError as err:
        raise UsageError(str(err)) from None
    config.batching_options()  # ConfigProtoError is a UsageError
    if config.prometheus_path() and config.rest_port is None:
        raise UsageError("the Prometheus endpoint of --monitoring_config_file is served on the REST "
                         "port: REST must be on")


def _say_served(model, say) -> None:
    """One line for the version `model` serves (its runtime and model card too). A function of its
    own so that no reference to the servable outlives it: the server runs inside the caller, and
    a version still referenced there would never be freed when a newer one replaces it."""
    from vtcaps_tf.export.model_card import describe, read_model_card

    versions = model.versions
    servable = model.get() if versions else None
    runs = (f" (TFLite {servable.tflite.mode}, {servable.tflite.path})"
            if servable is not None and servable.tflite is not None else "")
    say(f"model {model.spec.name!r} from {model.spec.base_path}: "
        + (f"serving version {max(versions)}{runs}" if versions else "no version yet (waiting for one)"))
    card = read_model_card(servable.path) if servable is not None else None
    if card:  # vtcaps exports carry one; other SavedModels are served without
        say(f"  model card: {describe(card)}")


def serve_until_stopped(specs, config: ServerConfig, say=print) -> None:
    """Serve `specs` until SIGTERM (then return) or Ctrl-C (KeyboardInterrupt, after shutting
    down). `say` gets one line per model served (its version and model card) and per API bound.
    A port that cannot be bound raises OSError."""
    check_config(config)
    server = ModelServer(specs, config)
    server.start()
    try:
        for spec in specs:
            _say_served(server.manager.model(spec.name), say)
        if server.grpc_port is not None:
            say(f"gRPC API at {config.host}:{server.grpc_port}")
        if config.grpc_socket_path:
            say(f"gRPC API at unix:{config.grpc_socket_path}")
        if server.rest_port is not None:
            say(f"REST API at {server.rest_url}")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(3600):
            pass
    finally:
        say("shutting down")
        server.stop()
