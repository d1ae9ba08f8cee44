"""The REST client: request encoding, answers as numpy, errors as ServingClientError."""

import json

import numpy as np
import pytest
import toy_model

from vtcaps_tf.apps.client import ServingClient, ServingClientError, encode_inputs


def test_encode_inputs_round_trips_exactly():
    rng = np.random.default_rng(0)
    inputs = {"u8": rng.integers(0, 256, (2, 3, 4), dtype=np.uint8),
              "f32": (rng.normal(size=(2, 3, 16)) * 1e-3).astype(np.float32),
              "f32_short_rows": rng.random((4, 2), dtype=np.float32),
              "s": np.array([b"\x00\xff", b"ok"], dtype=object)}
    body = json.loads(encode_inputs(inputs, "serve_examples"))
    assert body["signature_name"] == "serve_examples"
    got = body["inputs"]
    np.testing.assert_array_equal(np.asarray(got["u8"]), inputs["u8"])
    # float32 goes in its shortest form: reading it back as float64 and casting is exact.
    np.testing.assert_array_equal(np.asarray(got["f32"], np.float64).astype(np.float32), inputs["f32"])
    np.testing.assert_array_equal(np.asarray(got["f32_short_rows"], np.float64).astype(np.float32),
                                  inputs["f32_short_rows"])
    assert got["s"] == [{"b64": "AP8="}, {"b64": "b2s="}]


def test_client_against_server(toy_server, toy_in_process):
    with ServingClient(toy_server.rest_url, "toy") as client:
        assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
        sig = client.signature()
        assert sig["inputs"]["frames"] == ("DT_UINT8", (None, toy_model.N, toy_model.S, toy_model.S, 3))
        inputs = toy_model.random_inputs(2, seed=8)
        for _ in range(2):  # the second call reuses the kept-alive connection
            outputs = client.predict(inputs)
        np.testing.assert_allclose(outputs["probabilities"], toy_in_process(inputs)["probabilities"],
                                   atol=1e-5, rtol=0)
        assert outputs["classes"].tolist() == [toy_model.CLASSES] * 2
        with pytest.raises(ServingClientError) as err:
            client.predict(inputs, signature_name="nope")
        assert err.value.status == 400 and "nope" in err.value.message
        with pytest.raises(ServingClientError, match="no signature"):
            client.signature("nope")
    with pytest.raises(ServingClientError) as err:
        ServingClient(toy_server.rest_url, "toy", version=5).status()
    assert err.value.status == 404
    with pytest.raises(ValueError):
        ServingClient("https://example.com", "toy")
