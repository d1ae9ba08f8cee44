"""A small client for TF Serving's REST API (works with `vtcaps serve` and with TF Serving itself)."""

from __future__ import annotations

import base64
import http.client
import json
import urllib.parse

import numpy as np

from vtcaps_tf.errors import UsageError


class ServingClientError(RuntimeError):
    """The server answered with an error (or could not be reached: status 0)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


def _array_json(arr) -> str:
    """JSON text of one tensor; float32 in its shortest round-trip form (half the digits of
    float64's, and exact once the server casts back to float32); strings as {"b64": ...}."""
    arr = np.asarray(arr)
    if arr.dtype.kind in ("S", "O", "U"):
        flat = [{"b64": base64.b64encode(b if isinstance(b, bytes) else str(b).encode()).decode()}
                for b in arr.ravel().tolist()]
        return json.dumps(np.array(flat, dtype=object).reshape(arr.shape).tolist(), separators=(",", ":"))
    if arr.dtype == np.float32 and arr.ndim and arr.size and arr.shape[-1] >= 8 and np.isfinite(arr).all():
        texts = arr.ravel().astype(str).tolist()
        for dim in reversed(arr.shape):
            texts = ["[" + ",".join(texts[i:i + dim]) + "]" for i in range(0, len(texts), dim)]
        return texts[0]
    return json.dumps(arr.tolist(), separators=(",", ":"))


def encode_inputs(inputs: dict[str, np.ndarray], signature_name: str | None = None) -> bytes:
    """A columnar predict body: {"signature_name": ..., "inputs": {name: tensor, ...}}."""
    parts = [f"{json.dumps(k)}:{_array_json(v)}" for k, v in inputs.items()]
    head = f'{{"signature_name":{json.dumps(signature_name)},' if signature_name else "{"
    return (head + '"inputs":{' + ",".join(parts) + "}}").encode()


class ServingClient:
    """`ServingClient("http://localhost:8501", "vtcaps").predict({...})` -> dict of numpy arrays.

    One keep-alive connection per client object (not shared between threads).
    """

    def __init__(self, server: str, model_name: str, version: int | None = None,
                 label: str | None = None, timeout: float = 300.0):
        url = urllib.parse.urlsplit(server if "://" in server else f"http://{server}")
        if url.scheme != "http":
            raise UsageError(f"only http:// servers are supported, got {server!r}")
        if not url.hostname:
            raise UsageError(f"no host in server address {server!r}")
        try:
            port = url.port
        except ValueError:  # a port that is not a number from 0 to 65535
            raise UsageError(f"no valid port in server address {server!r}") from None
        self.host, self.port = url.hostname, port or 80
        self.model_name = model_name
        self.timeout = timeout
        self.base = f"/v1/models/{urllib.parse.quote(model_name, safe='')}"
        if version is not None:
            self.base += f"/versions/{int(version)}"
        elif label is not None:
            self.base += f"/labels/{urllib.parse.quote(label, safe='')}"
        self._conn = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base}"

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method: str, path: str, body: bytes | None = None) -> dict:
        """One request; returns the JSON answer, raises ServingClientError on an error status."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as err:
                self.close()
                if attempt:
                    raise ServingClientError(0, f"cannot reach {self.host}:{self.port}: {err}") from None
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        try:
            payload = json.loads(data) if data else {}
        except json.JSONDecodeError:
            payload = {"error": data[:200].decode("utf-8", "replace")}
        if response.status != 200:
            raise ServingClientError(response.status, payload.get("error", str(payload)))
        return payload

    def status(self) -> dict:
        return self.request("GET", self.base)

    def metadata(self) -> dict:
        return self.request("GET", self.base + "/metadata")

    def signature(self, name: str = "serving_default") -> dict:
        """One signature's inputs and outputs from /metadata: {"inputs": {name: (dtype, shape)}, ...}."""
        defs = self.metadata()["metadata"]["signature_def"]["signature_def"]
        if name not in defs:
            raise ServingClientError(404, f"model has no signature {name!r}; it has {sorted(defs)}")
        return {part: {k: (v.get("dtype"), _shape(v)) for k, v in defs[name].get(part, {}).items()}
                for part in ("inputs", "outputs")}

    def predict(self, inputs: dict[str, np.ndarray], signature_name: str | None = None,
                body: bytes | None = None) -> dict[str, np.ndarray]:
        """Columnar predict; returns {output name: array} (strings as str)."""
        payload = self.request("POST", self.base + ":predict",
                               body if body is not None else encode_inputs(inputs, signature_name))
        outputs = payload["outputs"]
        if not isinstance(outputs, dict):
            outputs = {"output": outputs}
        return {k: np.asarray(v) for k, v in outputs.items()}


def _shape(tensor_info: dict):
    shape = tensor_info.get("tensor_shape", {})
    if shape.get("unknown_rank"):
        return None
    return tuple(int(d["size"]) if int(d.get("size", -1)) >= 0 else None for d in shape.get("dim", []))
