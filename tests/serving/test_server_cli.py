"""`vtcaps serve` flags (TF Serving's spellings accepted) and the command run as a process."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from vtcaps_tf.cli.main import main as vtcaps
from vtcaps_tf.cli.serve import build_parser, server_config
from vtcaps_tf.errors import UsageError
from vtcaps_tf.serving.server import ServerConfig, check_config, model_specs


def test_tf_serving_flag_spellings_are_accepted():
    args = build_parser().parse_args(["--model_name", "m", "--model_base_path", "/models/m",
                                      "--rest_api_port", "0", "--port", "9000",
                                      "--file_system_poll_wait_seconds", "5"])
    assert (args.model_name, args.model_base_path, args.rest_port, args.grpc_port,
            args.poll_wait_seconds) == ("m", "/models/m", 0, 9000, 5.0)
    (spec,) = model_specs(args.model_base_path, args.model_config_file, args.model_name)
    assert spec.name == "m" and spec.base_path == "/models/m"


def test_grpc_channel_arguments_must_be_key_value(capsys):
    assert vtcaps(["serve", "--model-base-path", "m", "--grpc_channel_arguments",
                   "grpc.keepalive_time_ms"]) == 2
    assert "is not key=value" in capsys.readouterr().err
    args = build_parser().parse_args(["--model-base-path", "m", "--grpc_channel_arguments",
                                      "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=x"])
    assert server_config(args).grpc_channel_arguments == (("grpc.max_connection_age_ms", 2000),
                                                          ("grpc.lb_policy_name", "x"))


def test_config_file_poll_flag_needs_a_config_file(capsys):
    args = build_parser().parse_args(["--model_config_file", "m.config",
                                      "--model_config_file_poll_wait_seconds", "30"])
    assert args.config_poll_wait_seconds == 30.0
    assert vtcaps(["serve", "--model-base-path", "m", "--model-config-file-poll-wait-seconds", "5"]) == 2
    assert "needs a model_config_file" in capsys.readouterr().err


def test_a_configuration_no_server_can_run_is_refused():
    for config, words in [(ServerConfig(rest_port=None, grpc_port=None), "nothing to serve"),
                          (ServerConfig(max_request_bytes=0), "max_request_bytes must be positive"),
                          (ServerConfig(config_poll_wait_seconds=1.0), "needs a model_config_file")]:
        with pytest.raises(UsageError, match=words):
            check_config(config)
    check_config(ServerConfig(rest_port=None))  # gRPC alone serves


def test_defaults_are_tf_serving_ports_and_the_folder_name():
    args = build_parser().parse_args(["--model-base-path", "saved_models/vtcaps/"])
    assert (args.rest_port, args.grpc_port, args.poll_wait_seconds) == (8501, 8500, 1.0)
    config = server_config(args)
    assert (config.rest_port, config.grpc_port) == (8501, 8500)
    assert model_specs(args.model_base_path)[0].name == "vtcaps"
    # -1 turns an API off
    off = server_config(build_parser().parse_args(["--model-base-path", "m", "--rest-port", "-1"]))
    assert (off.rest_port, off.grpc_port) == (None, 8500)


def test_batching_monitoring_and_warmup_flags_in_tf_servings_spellings(tmp_path, capsys):
    args = build_parser().parse_args(["--model_base_path", "m", "--enable_batching",
                                      "--batching_parameters_file", "b.config",
                                      "--monitoring_config_file", "m.config", "--enable_model_warmup=false",
                                      "--num_request_iterations_for_warmup", "3",
                                      "--drain-timeout-seconds", "2"])
    config = server_config(args)
    assert (config.enable_batching, config.batching_parameters_file, config.monitoring_config_file,
            config.warmup, config.warmup_iterations, config.drain_timeout_seconds) == \
        (True, "b.config", "m.config", False, 3, 2.0)
    assert server_config(build_parser().parse_args(["--model_base_path", "m", "--no-warmup"])).warmup is False
    assert server_config(build_parser().parse_args(["--model_base_path", "m"])).warmup is True
    # The parameters file without --enable_batching is refused before anything loads (TF Serving too).
    params = tmp_path / "b.config"
    params.write_text("max_batch_size { value: 8 }")
    assert vtcaps(["serve", "--model-base-path", str(tmp_path), "--batching_parameters_file", str(params)]) == 2
    assert "needs --enable_batching" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["--model-base-path", "a", "--model-config-file", "b"]])
def test_exactly_one_model_source(argv, capsys):
    assert vtcaps(["serve", *argv]) == 2
    assert "exactly one of" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_command_runs_and_stops_on_sigterm(toy_base_path, tmp_path):
    # A copy of the toy model with a model card, as vtcaps exports carry: serve says where it came from.
    base = tmp_path / "toy"
    shutil.copytree(os.path.join(toy_base_path, "1"), base / "1")
    (base / "1" / "assets").mkdir(exist_ok=True)
    (base / "1" / "assets" / "model_card.json").write_text(json.dumps({
        "preset": "tiny", "classes": ["a", "b", "c"],
        "training": {"source": "synthetic", "videos": {"train": 30, "val": 6, "test": 6}}}))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vtcaps_tf.cli.main", "serve", "--model-base-path", str(base),
         "--model-name", "toy", "--rest-port", "0", "--grpc-port", "0"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url, lines, deadline = None, [], time.time() + 120
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"REST API at (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, lines
        assert any("serving version 1" in line for line in lines)
        assert any("model card:" in line and "trained on synthetic (42 videos)" in line for line in lines)
        assert any(re.search(r"gRPC API at 127\.0\.0\.1:\d+", line) for line in lines)
        status = requests.get(f"{url}/v1/models/toy", timeout=10).json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
