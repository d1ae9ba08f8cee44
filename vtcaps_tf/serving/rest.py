"""TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest) on the stdlib HTTP server.

GET  /v1/models/<name>[/versions/<v>|/labels/<l>]             model status
GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata    SignatureDefMap
POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict     {"instances": ...} or {"inputs": ...}
POST /v1/models/<name>[/versions/<v>|/labels/<l>]:classify    {"examples": [{feature: value}], "context": ...}
POST /v1/models/<name>[/versions/<v>|/labels/<l>]:regress     the same
GET  <prometheus path>                                         metrics (with a monitoring config)
Errors are {"error": "..."} with TF Serving's HTTP status for the error's code. A predict body
becomes the `PredictRequest` gRPC receives and runs through the same predictor (`predictor.py`).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import re
import socket
import threading

import numpy as np

from vtcaps_tf.serving import json_codec, predictor
from vtcaps_tf.serving.errors import ServingError, invalid
from vtcaps_tf.serving.metrics import track
from vtcaps_tf.serving.servables import ModelManager

log = logging.getLogger(__name__)

# Bodies over the limit are read and thrown away (in chunks, never held) up to this size, so that
# the client sees the 413 instead of a reset connection; beyond it the connection is just closed.
_DRAIN_LIMIT = 1 << 30
_CHUNK = 1 << 20

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>/metadata|:predict|:classify|:regress)?/?$")


def _route(path: str):
    m = _ROUTE.match(path.split("?", 1)[0])
    if not m:
        return None
    version = m.group("version")
    if version is not None:
        if not version.isdigit():
            raise invalid(f"Failed to convert version: {version} to numeric.")
        version = int(version)
    return m.group("name"), version, m.group("label"), m.group("verb") or ""


# ---------------------------------------------------------------------------------------------
# predict: JSON request -> named numpy inputs -> JSON response


def parse_predict_request(body: dict, signature):
    """The request object -> ({input name: array}, row_format)."""
    if not isinstance(body, dict):
        raise invalid("JSON Value: the request body must be a JSON object")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise invalid("Missing 'inputs' or 'instances' key" if not has_instances
                      else "Not both 'inputs' and 'instances' can be specified in a request")
    specs = signature.inputs
    if has_inputs:
        value = body["inputs"]
        if isinstance(value, dict) and not json_codec.is_b64(value):
            named = value
        elif len(specs) == 1:
            named = {next(iter(specs)): value}
        else:
            raise invalid(f"'inputs' must be an object naming each input {sorted(specs)} "
                          "when the signature has several")
        signature.check_inputs(named)
        return {k: json_codec.to_tensor(v, specs[k].dtype, k) for k, v in named.items()}, False

    rows = body["instances"]
    if isinstance(rows, np.ndarray):
        rows_are_objects = False
    else:
        if not isinstance(rows, list) or not rows:
            raise invalid("'instances' must be a non-empty list")
        rows_are_objects = all(isinstance(r, dict) and not json_codec.is_b64(r) for r in rows)
        if not rows_are_objects and any(isinstance(r, dict) and not json_codec.is_b64(r) for r in rows):
            raise invalid("'instances' must be all objects (named inputs) or all values")
    if not rows_are_objects:
        if len(specs) != 1:
            raise invalid(f"each of 'instances' must be an object naming the inputs {sorted(specs)}")
        key = next(iter(specs))
        return {key: json_codec.to_tensor(rows, specs[key].dtype, key)}, True
    out = {}
    for i, row in enumerate(rows):
        try:
            signature.check_inputs(row)
        except ServingError as err:
            raise invalid(f"instance {i}: {err.message}") from None
    for key, spec in specs.items():
        parts = [json_codec.to_tensor(row[key], spec.dtype, key) for row in rows]
        shapes = {p.shape for p in parts}
        if len(shapes) != 1:
            raise invalid(f"input '{key}' has different shapes across instances: {sorted(shapes)}")
        out[key] = np.stack(parts)
    return out, True


def format_predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    if not row_format:
        if len(outputs) == 1:
            (name, arr), = outputs.items()
            return {"outputs": json_codec.from_tensor(arr, name)}
        return {"outputs": {k: json_codec.from_tensor(v, k) for k, v in outputs.items()}}
    batch = {v.shape[0] if v.ndim else None for v in outputs.values()}
    if len(batch) != 1 or None in batch:
        raise invalid("output tensors do not share one 0-th (batch) dimension, which the row "
                      "format needs; use the columnar 'inputs' format")
    if len(outputs) == 1:
        (name, arr), = outputs.items()
        return {"predictions": json_codec.from_tensor(arr, name)}
    columns = {k: json_codec.from_tensor(v, k) for k, v in outputs.items()}
    n = batch.pop()
    return {"predictions": [{k: col[i] for k, col in columns.items()} for i in range(n)]}


# ---------------------------------------------------------------------------------------------
# HTTP plumbing


class RestServer(http.server.ThreadingHTTPServer):
    """The REST API; `metrics` (`ServingMetrics` or None) records the requests and is scraped at
    `metrics_path`. `drain()` stops accepting and waits for the requests in flight."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, manager: ModelManager, max_request_bytes: int, metrics=None,
                 metrics_path: str | None = None):
        self.manager = manager
        self.max_request_bytes = max_request_bytes
        self.metrics = metrics
        self.metrics_path = metrics_path if metrics is not None else None
        self.draining = False
        self._in_flight = 0
        self._idle = threading.Condition()
        super().__init__(address, _Handler)

    @contextlib.contextmanager
    def in_flight(self):
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Stop accepting connections, then wait up to `timeout` seconds for the requests being
        answered to finish (their responses close their connections); True when none is left."""
        self.draining = True
        self.shutdown()
        self.server_close()
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection
    # TCP_NODELAY: the headers and the body go out as two writes; with Nagle's algorithm the body
    # would wait for the client's delayed ACK of the headers (tens of milliseconds per request).
    disable_nagle_algorithm = True
    server: RestServer

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    # --- responses
    def _send_json(self, status: int, payload: dict | bytes, close: bool = False,
                   content_type: str = "application/json"):
        body = payload if isinstance(payload, bytes) else json_codec.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close or self.server.draining:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, err: ServingError, close: bool = False):
        self._send_json(err.http_status, {"error": err.message}, close)

    # --- request bodies
    def handle_expect_100(self):
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.server.max_request_bytes:
            self._send_json(413, {"error": self._too_large(int(length))}, close=True)
            return False
        return super().handle_expect_100()

    def _too_large(self, size) -> str:
        return (f"request body of {size} bytes exceeds the limit of {self.server.max_request_bytes} "
                "bytes (--max-request-bytes)")

    def _read_body(self) -> bytes | None:
        """The body, or None after answering 413/411/400 (the caller returns)."""
        limit = self.server.max_request_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            self._send_json(411, {"error": "a request body needs a Content-Length header"}, close=True)
            return None
        if not length.strip().isdigit():
            self._send_json(400, {"error": f"bad Content-Length {length!r}"}, close=True)
            return None
        size = int(length)
        if size > limit:
            self._drain(size)
            self._send_json(413, {"error": self._too_large(size)}, close=True)
            return None
        return self.rfile.read(size)

    def _drain(self, size):
        if size > _DRAIN_LIMIT:
            return
        try:
            self.connection.settimeout(30)
            left = size
            while left > 0:
                chunk = self.rfile.read(min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
        except (OSError, socket.timeout):
            pass

    def _read_chunked(self, limit) -> bytes | None:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._send_json(400, {"error": "malformed chunked body"}, close=True)
                return None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                self._send_json(413, {"error": self._too_large(f"more than {limit}")}, close=True)
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    # --- verbs
    def do_GET(self):  # noqa: N802 - stdlib name
        with self.server.in_flight():
            self._get()

    def do_POST(self):  # noqa: N802 - stdlib name
        with self.server.in_flight():
            self._post()

    def _get(self):
        if self.server.metrics_path and self.path.split("?", 1)[0] == self.server.metrics_path:
            self._send_json(200, self.server.metrics.exposition(),
                            content_type="text/plain; version=0.0.4; charset=utf-8")
            return
        try:
            route = _route(self.path)
            if route is None or route[3] not in ("", "/metadata"):
                self._send_json(404, {"error": f"Malformed request: GET {self.path}"})
                return
            name, version, label, verb = route
            self._send_json(200, self._metadata(name, version, label) if verb
                            else self._status(name, version, label))
        except ServingError as err:
            self._send_error(err)
        except Exception as err:  # noqa: BLE001 - the server stays up whatever happens
            log.exception("GET %s failed", self.path)
            self._send_json(500, {"error": f"internal error: {err}"})

    def _post(self):
        try:
            route = _route(self.path)
        except ServingError as err:
            route = err
        body = self._read_body()
        if body is None:
            return
        try:
            if isinstance(route, ServingError):
                raise route
            if route is None or route[3] not in (":predict", ":classify", ":regress"):
                self._send_json(404, {"error": f"Malformed request: POST {self.path}"})
                return
            name, version, label, verb = route
            with track(self.server.metrics, name, verb[1:], "REST"):
                answer = (self._predict(name, version, label, body) if verb == ":predict"
                          else self._classify_or_regress(verb, name, version, label, body))
            self._send_json(200, answer)
        except ServingError as err:
            self._send_error(err)
        except Exception as err:  # noqa: BLE001 - the server stays up whatever happens
            log.exception("POST %s failed", self.path)
            self._send_json(500, {"error": f"internal error: {err}"})

    def _status(self, name, version, label) -> dict:
        from google.protobuf import json_format

        from vtcaps_tf.serving.responses import status_response

        return json_format.MessageToDict(status_response(self.server.manager, name, version, label),
                                         preserving_proto_field_name=True,
                                         including_default_value_fields=True)

    def _metadata(self, name, version, label) -> dict:
        from google.protobuf import json_format

        from vtcaps_tf.serving.responses import metadata_response

        response, sig_map = metadata_response(self.server.manager, name, version, label)
        return {
            "model_spec": json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True,
                                                    including_default_value_fields=True),
            # As TF Serving prints it: proto3 JSON with the default values written out ("name": ""
            # on each dim, "unknown_rank": false, "dim": [], "defaults": {}).
            "metadata": {"signature_def": json_format.MessageToDict(
                sig_map, preserving_proto_field_name=True, including_default_value_fields=True)},
        }

    def _classify_or_regress(self, verb, name, version, label, body: bytes) -> bytes:
        from vtcaps_tf.serving import inference

        try:
            # The standard decoder: features are small, and each value's JSON type picks its kind.
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise invalid(f"JSON Parse error: {err}") from None
        signature_name, examples = inference.input_from_json(request)
        if verb == ":classify":
            response = inference.classify(self.server.manager, name, version, label, signature_name, examples)
            return json_codec.dumps(inference.classification_json(response.result))
        response = inference.regress(self.server.manager, name, version, label, signature_name, examples)
        return json_codec.dumps(inference.regression_json(response.result))

    def _predict(self, name, version, label, body: bytes) -> bytes:
        try:
            request = json_codec.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise invalid(f"JSON Parse error: {err}") from None
        if not isinstance(request, dict):
            raise invalid("JSON Parse error: the request body must be a JSON object")
        servable = self.server.manager.get(name, version, label)
        signature_name = request.get("signature_name") or None
        if signature_name is not None and not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        signature = servable.signature(signature_name)
        inputs, row_format = parse_predict_request(request, signature)
        # The same request object and predictor as gRPC, on the version that read the JSON.
        grpc_request = predictor.predict_request(name, servable.version, signature_name, inputs)
        _, outputs = predictor.run_predict(servable, grpc_request)
        return json_codec.dumps(format_predict_response(outputs, row_format))
