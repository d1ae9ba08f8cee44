"""The Prometheus endpoint of `--monitoring_config_file`: TF Serving's metric names and labels,
read by `prometheus_client`'s own text parser; each server keeps its own counts."""

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import toy_model
from grpc_helpers import grpc_predict
from vtcaps_tf.errors import UsageError
from vtcaps_tf.serving.config_protos import DEFAULT_PROMETHEUS_PATH, read_monitoring_config
from vtcaps_tf.serving.servables import ModelSpec
from vtcaps_tf.serving.server import ModelServer, ServerConfig, check_config

P = ":tensorflow:serving:"


def _scrape(server, path=DEFAULT_PROMETHEUS_PATH):
    r = requests.get(server.rest_url + path, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    return [s for f in text_string_to_metric_families(r.text) for s in f.samples]


def _value(samples, name, **labels):
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else 0.0


@pytest.fixture()
def monitoring_file(tmp_path):
    path = tmp_path / "monitoring.config"
    path.write_text("prometheus_config {\n  enable: true\n}\n")
    return str(path)


def _server(base, monitoring_file, **config):
    return ModelServer([ModelSpec("toy", base)],
                       ServerConfig(rest_port=0, grpc_port=0, poll_wait_seconds=0,
                                    monitoring_config_file=monitoring_file, **config))


def test_requests_latencies_and_warmup_are_counted_under_tf_servings_names(toy_base_path, monitoring_file):
    x = toy_model.random_inputs(2)
    body = {"inputs": {k: v.tolist() for k, v in x.items()}}
    with _server(toy_base_path, monitoring_file) as server:
        url = f"{server.rest_url}/v1/models/toy:predict"
        for _ in range(3):
            assert requests.post(url, json=body, timeout=30).status_code == 200
        assert requests.post(url, json={"inputs": {"frames": "x"}}, timeout=30).status_code == 400
        grpc_predict(server.grpc_port, "toy", x)
        with pytest.raises(grpc.RpcError):
            grpc_predict(server.grpc_port, "toy", {"frames": x["frames"]})
        samples = _scrape(server)
    # 3 + 1 good requests, 2 refused (REST and gRPC) as invalid arguments.
    assert _value(samples, P + "request_count", model_name="toy", status="OK") == 4
    assert _value(samples, P + "request_count", model_name="toy", status="INVALID_ARGUMENT") == 2
    assert _value(samples, P + "request_latency_count", model_name="toy", API="predict", entrypoint="REST") == 4
    assert _value(samples, P + "request_latency_count", model_name="toy", API="predict", entrypoint="GRPC") == 2
    # The model ran for the 4 good requests, plus the zero-batch warm-up (no warm-up file here).
    assert _value(samples, P + "runtime_latency_count", model_name="toy", API="serving_default") == 5
    assert _value(samples, P + "model_warmup_latency_count", status="OK") == 1
    assert _value(samples, P + "request_latency_sum", entrypoint="REST") > 0


def test_batching_metrics_and_a_registry_per_server(toy_base_path, monitoring_file, tmp_path):
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 0 }\n")
    x = toy_model.random_inputs(3)
    with _server(toy_base_path, monitoring_file, enable_batching=True, batching_parameters_file=str(params),
                 warmup=False) as first, _server(toy_base_path, monitoring_file, warmup=False) as second:
        grpc_predict(first.grpc_port, "toy", x)
        one, other = _scrape(first), _scrape(second)
    assert _value(one, P + "batching_session:processed_batch_size_count") == 1
    assert _value(one, P + "batching_session:processed_batch_size_sum") == 3  # the request's 3 rows
    assert _value(one, P + "batching_session:queuing_latency_count") == 1
    assert _value(one, P + "request_count", status="OK") == 1
    assert _value(other, P + "request_count", status="OK") == 0  # its own registry


def test_monitoring_config_file(tmp_path):
    path = tmp_path / "m.config"
    path.write_text('prometheus_config { enable: true path: "/metrics" }')
    assert read_monitoring_config(str(path)) == "/metrics"
    path.write_text("prometheus_config { enable: false }")
    assert read_monitoring_config(str(path)) is None
    path.write_text('prometheus_config { enable: true path: "/metrics" }')
    with pytest.raises(UsageError, match="REST"):
        check_config(ServerConfig(rest_port=None, monitoring_config_file=str(path)))
    path.write_text("prometheus { enable: true }")
    with pytest.raises(UsageError, match="MonitoringConfig"):
        read_monitoring_config(str(path))
