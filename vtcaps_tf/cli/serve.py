"""`vtcaps serve`: a TF-Serving-compatible model server (REST on 8501, gRPC on 8500).

    vtcaps serve --model-base-path saved_models/vtcaps --model-name vtcaps
    vtcaps serve --model-config-file models.config

TF Serving's own flag spellings (--model_base_path, --rest_api_port, --port,
--prefer_tflite_model, ...) are accepted too.
Runs `vtcaps_tf.serving.server.serve_until_stopped` until SIGTERM (the requests in flight
finish, then status 0) or Ctrl-C (130).
"""

from __future__ import annotations

import argparse
import logging

from vtcaps_tf.errors import EXIT_OK, UsageError


def _flag_value(text: str) -> bool:
    """A boolean flag's value as TF Serving writes it (`--prefer_tflite_model=true`)."""
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1")


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_tf.serving.server import ServerConfig  # the standard library only

    d = ServerConfig()
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
                   dest="config_poll_wait_seconds", type=float, default=d.config_poll_wait_seconds,
                   help="seconds between re-reads of --model-config-file, applying it when it "
                        "changed (default 0: read once)")
    p.add_argument("--rest-port", "--rest_api_port", dest="rest_port", type=int, default=d.rest_port,
                   help=f"REST port (default {d.rest_port}; 0: any free port; -1: no REST)")
    p.add_argument("--grpc-port", "--port", dest="grpc_port", type=int, default=d.grpc_port,
                   help=f"gRPC port (default {d.grpc_port}; 0: any free port; -1: no gRPC)")
    p.add_argument("--grpc-socket-path", "--grpc_socket_path", dest="grpc_socket_path",
                   help="also serve gRPC on this Unix socket (clients use unix:PATH)")
    p.add_argument("--grpc-channel-arguments", "--grpc_channel_arguments", dest="grpc_channel_arguments",
                   default="", help="extra gRPC server options, key=value,key=value "
                                    "(e.g. grpc.max_connection_age_ms=2000)")
    p.add_argument("--host", default=d.host,
                   help=f"address to bind (default {d.host}; 0.0.0.0 to accept other machines)")
    p.add_argument("--file-system-poll-wait-seconds", "--file_system_poll_wait_seconds",
                   dest="poll_wait_seconds", type=float, default=d.poll_wait_seconds,
                   help=f"seconds between looks for new versions (default {d.poll_wait_seconds:g}; "
                        "0: load once)")
    p.add_argument("--max-request-bytes", type=int, default=d.max_request_bytes,
                   help=f"largest request body accepted (default {d.max_request_bytes})")
    p.add_argument("--prefer-tflite-model", "--prefer_tflite_model", dest="prefer_tflite_model",
                   nargs="?", const=True, default=d.prefer_tflite_model, type=_flag_value,
                   metavar="true|false",
                   help="serve a version's model.tflite (written by `vtcaps export --tflite`) in "
                        "place of its SavedModel when it has one (TF Serving's flag; alone: true)")
    p.add_argument("--num-tflite-pools", "--num_tflite_pools", dest="num_tflite_pools", type=int, metavar="N",
                   default=d.num_tflite_pools,
                   help=f"TFLite interpreter pools of a version (default {d.num_tflite_pools})")
    p.add_argument("--num-tflite-interpreters-per-pool", "--num_tflite_interpreters_per_pool",
                   dest="num_tflite_interpreters_per_pool", type=int, metavar="N",
                   default=d.num_tflite_interpreters_per_pool,
                   help="TFLite interpreters in each pool: pools x this many requests run at once "
                        f"(default {d.num_tflite_interpreters_per_pool})")
    p.add_argument("--enable-model-warmup", "--enable_model_warmup", dest="warmup", nargs="?", const=True,
                   default=d.warmup, type=_flag_value, metavar="true|false",
                   help="warm each version up before serving it: replay its "
                        "assets.extra/tf_serving_warmup_requests, or without that file run one zero "
                        "batch through each signature (TF Serving's flag; default true)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="the same as --enable_model_warmup=false")
    p.add_argument("--num-request-iterations-for-warmup", "--num_request_iterations_for_warmup",
                   dest="warmup_iterations", type=int, metavar="N", default=d.warmup_iterations,
                   help=f"times each warm-up record is replayed (default {d.warmup_iterations})")
    p.add_argument("--enable-batching", "--enable_batching", dest="enable_batching", nargs="?", const=True,
                   default=d.enable_batching, type=_flag_value, metavar="true|false",
                   help="merge concurrent requests into batches (TF Serving's flag; alone: true)")
    p.add_argument("--batching-parameters-file", "--batching_parameters_file", dest="batching_parameters_file",
                   help="TF Serving's BatchingParameters in text format (max_batch_size, "
                        "batch_timeout_micros, ...); needs --enable_batching")
    p.add_argument("--monitoring-config-file", "--monitoring_config_file", dest="monitoring_config_file",
                   help="TF Serving's MonitoringConfig in text format; prometheus_config { enable: true } "
                        "serves Prometheus metrics on the REST port")
    p.add_argument("--drain-timeout-seconds", dest="drain_timeout_seconds", type=float,
                   default=d.drain_timeout_seconds,
                   help="on SIGTERM, seconds the requests in flight get to finish "
                        f"(default {d.drain_timeout_seconds:g})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return p


def server_config(args: argparse.Namespace):
    """The parsed flags as a `ServerConfig` (a negative port turns its API off)."""
    from vtcaps_tf.serving.grpc_service import parse_channel_arguments
    from vtcaps_tf.serving.server import ServerConfig

    try:
        channel_arguments = tuple(parse_channel_arguments(args.grpc_channel_arguments))
    except ValueError as err:
        raise UsageError(f"--grpc-channel-arguments: {err}") from None
    return ServerConfig(
        host=args.host,
        rest_port=None if args.rest_port < 0 else args.rest_port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        poll_wait_seconds=args.poll_wait_seconds,
        max_request_bytes=args.max_request_bytes,
        warmup=args.warmup,
        warmup_iterations=args.warmup_iterations,
        enable_batching=args.enable_batching,
        batching_parameters_file=args.batching_parameters_file,
        monitoring_config_file=args.monitoring_config_file,
        drain_timeout_seconds=args.drain_timeout_seconds,
        model_config_file=args.model_config_file,
        config_poll_wait_seconds=args.config_poll_wait_seconds,
        grpc_channel_arguments=channel_arguments,
        grpc_socket_path=args.grpc_socket_path,
        prefer_tflite_model=args.prefer_tflite_model,
        num_tflite_pools=args.num_tflite_pools,
        num_tflite_interpreters_per_pool=args.num_tflite_interpreters_per_pool)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_tf.serving.server import model_specs, serve_until_stopped

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    specs = model_specs(args.model_base_path, args.model_config_file, args.model_name)
    serve_until_stopped(specs, server_config(args), say=lambda line: print(line, flush=True))
    return EXIT_OK
