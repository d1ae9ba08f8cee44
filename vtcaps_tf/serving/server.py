"""`vtcaps serve`: a TF-Serving-compatible model server (REST on 8501, gRPC on 8500).

    vtcaps serve --model-base-path saved_models/vtcaps --model-name vtcaps
    vtcaps serve --model-config-file models.config

TF Serving's own flag spellings (--model_base_path, --rest_api_port, --port, ...) are accepted too.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading

from vtcaps_tf.serving.rest import DEFAULT_MAX_REQUEST_BYTES

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    rest_port: int | None = 8501  # None: no REST; 0: a free port
    grpc_port: int | None = 8500  # None: no gRPC; 0: a free port
    poll_wait_seconds: float = 1.0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    warmup: bool = True
    grpc_workers: int = 16
    model_config_file: str | None = None  # re-read every config_poll_wait_seconds when > 0
    config_poll_wait_seconds: float = 0.0
    grpc_channel_arguments: tuple = ()  # extra gRPC server options, (key, value) pairs
    grpc_socket_path: str | None = None  # also serve gRPC on this Unix socket


class ModelServer:
    """Model manager + REST + gRPC. `start()` loads the models and binds; `stop()` shuts down."""

    def __init__(self, specs, config: ServerConfig | None = None):
        from vtcaps_tf.serving.servables import ModelManager

        self.config = config or ServerConfig()
        self.manager = ModelManager(specs, self.config.poll_wait_seconds, self.config.warmup)
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
                    cfg.grpc_socket_path)
                self._grpc.start()
            if cfg.rest_port is not None:
                self._rest = RestServer((cfg.host, cfg.rest_port), self.manager, cfg.max_request_bytes)
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

    def stop(self, grace: float = 5.0):
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
            self._grpc = None
        self.manager.stop()

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.rest_port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vtcaps serve",
        description="Serve SavedModels over TensorFlow Serving's REST and gRPC APIs. Serves the "
                    "highest version under the base path and switches when a newer one appears.")
    p.add_argument("--model-name", "--model_name", dest="model_name", default=None,
                   help="name in the URLs /v1/models/<name> (default: the base path's folder name, "
                        "e.g. vtcaps for saved_models/vtcaps)")
    p.add_argument("--model-base-path", "--model_base_path", dest="model_base_path",
                   help="folder holding integer version folders, e.g. saved_models/vtcaps")
    p.add_argument("--model-config-file", "--model_config_file", dest="model_config_file",
                   help="ModelServerConfig in text format, for several models or version policies")
    p.add_argument("--model-config-file-poll-wait-seconds", "--model_config_file_poll_wait_seconds",
                   dest="config_poll_wait_seconds", type=float, default=0.0,
                   help="seconds between re-reads of --model-config-file, applying it when it "
                        "changed (default 0: read once)")
    p.add_argument("--rest-port", "--rest_api_port", dest="rest_port", type=int, default=8501,
                   help="REST port (default 8501; 0: any free port; -1: no REST)")
    p.add_argument("--grpc-port", "--port", dest="grpc_port", type=int, default=8500,
                   help="gRPC port (default 8500; 0: any free port; -1: no gRPC)")
    p.add_argument("--grpc-socket-path", "--grpc_socket_path", dest="grpc_socket_path",
                   help="also serve gRPC on this Unix socket (clients use unix:PATH)")
    p.add_argument("--grpc-channel-arguments", "--grpc_channel_arguments", dest="grpc_channel_arguments",
                   default="", help="extra gRPC server options, key=value,key=value "
                                    "(e.g. grpc.max_connection_age_ms=2000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 to accept other machines)")
    p.add_argument("--file-system-poll-wait-seconds", "--file_system_poll_wait_seconds",
                   dest="poll_wait_seconds", type=float, default=1.0,
                   help="seconds between looks for new versions (default 1; 0: load once)")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help=f"largest request body accepted (default {DEFAULT_MAX_REQUEST_BYTES})")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="do not run one zero batch through each signature after loading")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return p


def specs_from_args(args, parser):
    from vtcaps_tf.serving.config_file import ConfigFileError, read_model_config_file
    from vtcaps_tf.serving.servables import ModelSpec

    if bool(args.model_base_path) == bool(args.model_config_file):
        parser.error("give exactly one of --model-base-path or --model-config-file")
    if args.model_config_file:
        try:
            return read_model_config_file(args.model_config_file)
        except ConfigFileError as err:
            parser.error(str(err))
    name = args.model_name or os.path.basename(os.path.normpath(args.model_base_path))
    try:
        return [ModelSpec(name, args.model_base_path)]
    except ValueError as err:
        parser.error(str(err))


def cli_main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    specs = specs_from_args(args, parser)
    if args.max_request_bytes <= 0:
        parser.error("--max-request-bytes must be positive")
    from vtcaps_tf.serving.grpc_service import parse_channel_arguments
    from vtcaps_tf.export.model_card import describe, read_model_card

    try:
        channel_arguments = tuple(parse_channel_arguments(args.grpc_channel_arguments))
    except ValueError as err:
        parser.error(f"--grpc-channel-arguments: {err}")
    if args.config_poll_wait_seconds > 0 and not args.model_config_file:
        parser.error("--model-config-file-poll-wait-seconds needs --model-config-file")
    config = ServerConfig(
        host=args.host,
        rest_port=None if args.rest_port < 0 else args.rest_port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        poll_wait_seconds=args.poll_wait_seconds,
        max_request_bytes=args.max_request_bytes,
        warmup=args.warmup,
        model_config_file=args.model_config_file,
        config_poll_wait_seconds=args.config_poll_wait_seconds,
        grpc_channel_arguments=channel_arguments,
        grpc_socket_path=args.grpc_socket_path)
    if config.rest_port is None and config.grpc_port is None and not config.grpc_socket_path:
        parser.error("both REST and gRPC are disabled: nothing to serve")
    server = ModelServer(specs, config)
    try:
        server.start()
    except OSError as err:
        print(f"vtcaps serve: cannot bind: {err}", file=sys.stderr)
        return 1
    for spec in specs:
        model = server.manager.model(spec.name)
        versions = model.versions
        print(f"model {spec.name!r} from {spec.base_path}: "
              + (f"serving version {max(versions)}" if versions else "no version yet (waiting for one)"),
              flush=True)
        card = read_model_card(model.get().path) if versions else None
        if card:  # vtcaps exports carry one; other SavedModels are served without
            print(f"  model card: {describe(card)}", flush=True)
    if server.grpc_port is not None:
        print(f"gRPC API at {config.host}:{server.grpc_port}", flush=True)
    if config.grpc_socket_path:
        print(f"gRPC API at unix:{config.grpc_socket_path}", flush=True)
    if server.rest_port is not None:
        print(f"REST API at {server.rest_url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    print("shutting down", flush=True)
    server.stop()
    return 0
