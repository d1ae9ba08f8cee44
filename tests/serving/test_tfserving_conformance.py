"""TF Serving's own server test cases, against `vtcaps serve`.

The cases of tensorflow/serving's `tensorflow_model_server_test.py` that apply here, with the
responses that test expects from TF Serving, on TF Serving's test model (half_plus_two, built by
`half_plus_two.py` in the zero-padded version folder `00000123`): y = 0.5 x + 2, so x = 2 gives 3.
The metadata expected is the one TF Serving's test data records for this model
(`half_plus_two_model_metadata.json`), with the SignatureDef `defaults` map that TF Serving prints
as `{}` since TensorFlow added that field (as its newer `*_metadata.json` files show).
"""

import os
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

import half_plus_two
from vtcaps_tf.serving.config_file import ConfigFileError, read_model_config_file
from vtcaps_tf.serving.servables import ModelSpec
from vtcaps_tf.serving.server import ModelServer, ServerConfig

VERSION = 123  # what TF Serving reads from the folder 00000123


@pytest.fixture(scope="session")
def half_plus_two_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("half_plus_two")
    half_plus_two.write_half_plus_two(str(base))
    return str(base)


@pytest.fixture(scope="session")
def half_plus_three_base(tmp_path_factory):
    """TF Serving's half_plus_three: the same graph with b = 3 (x = 2 gives 4)."""
    base = tmp_path_factory.mktemp("half_plus_three")
    half_plus_two.write_half_plus_two(str(base), b=3.0)
    return str(base)


def _start(specs, **config):
    return ModelServer(specs, ServerConfig(rest_port=0, grpc_port=0, poll_wait_seconds=0, **config)).start()


def _write_config(path, **models):
    entry = 'config {{ name: "{}" base_path: "{}" model_platform: "tensorflow" }}'
    path.write_text("model_config_list {\n" + "".join(f"  {entry.format(name, base)}\n"
                                                      for name, base in models.items()) + "}\n")


@pytest.fixture(scope="module")
def server(half_plus_two_base):
    srv = _start([ModelSpec("default", half_plus_two_base)])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _rest(server, tail, body=None):
    url = f"{server.rest_url}/v1/models/default{tail}"
    r = requests.post(url, json=body, timeout=30) if body is not None else requests.get(url, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _check_model_spec(spec, name, signature_name, version=VERSION):
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature_name, version)


def _verify_predict(stub, expected_output, model_name="default", specify_output=True,
                    batch_input=False, signature_name="serving_default", version=VERSION,
                    input_name="x", output_name="y"):
    """TF Serving's VerifyPredictRequest: x = [2.0] (shape [1], or [1,1] with batch_input)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    x = request.inputs[input_name]
    x.dtype = types_pb2.DT_FLOAT
    x.float_val.append(2.0)
    x.tensor_shape.dim.add().size = 1
    if batch_input:
        x.tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append(output_name)
    result = stub.Predict(request, timeout=30)
    assert output_name in result.outputs
    assert result.outputs[output_name].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs[output_name].float_val) == [expected_output]
    _check_model_spec(result.model_spec, model_name, signature_name, version)


# ---------------------------------------------------------------------------------------------
# gRPC


def test_missing_model_error_names_the_servable(stub):
    """TF Serving's WaitForServerReady: an empty request to a missing model fails with 'Servable'."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "intentionally_missing_model"
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=30)
    assert "Servable" in err.value.details()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_model_status(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "default"
        result = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == VERSION
    assert result.model_version_status[0].status.error_code == 0


def _example_input(input_proto, x=2.0):
    input_proto.example_list.examples.add().features.feature["x"].float_list.value.append(x)


def test_classify(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    _example_input(request.input)
    result = stub.Classify(request, timeout=30)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    _check_model_spec(result.model_spec, "default", "classify_x_to_y")


def test_regress(stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    _example_input(request.input)
    result = stub.Regress(request, timeout=30)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    _check_model_spec(result.model_spec, "default", "regress_x_to_y")


def test_multi_inference(stub):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify")):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = method
    _example_input(request.input)
    result = stub.MultiInference(request, timeout=30)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        _check_model_spec(result.results[i].model_spec, "default", request.tasks[i].model_spec.signature_name)


def test_predict_saved_model(stub):
    """_TestPredict: with and without an output filter; x has shape [1] against a declared [-1,1]."""
    _verify_predict(stub, 3.0)
    _verify_predict(stub, 3.0, specify_output=False)


def test_good_model_config(tmp_path, half_plus_two_base, half_plus_three_base):
    """Two models from a model config file: half_plus_two (x=2 -> 3) and half_plus_three (-> 4)."""
    config = tmp_path / "good_model_config.txt"
    _write_config(config, half_plus_two=half_plus_two_base, half_plus_three=half_plus_three_base)
    srv = _start(read_model_config_file(str(config)))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for name, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
                _verify_predict(stub, expected, model_name=name)
                _verify_predict(stub, expected, model_name=name, specify_output=False)
    finally:
        srv.stop()


@pytest.mark.parametrize("poll_period", [0.2, 0], ids=["polled", "zero poll period"])
def test_model_config_reload(tmp_path, half_plus_two_base, half_plus_three_base, poll_period):
    """The config file rewritten to serve half_plus_three instead: picked up when the file is
    polled; with a zero poll period the server keeps serving half_plus_two."""
    config = tmp_path / "model_config.txt"
    _write_config(config, half_plus_two=half_plus_two_base)
    srv = _start(read_model_config_file(str(config)), model_config_file=str(config),
                 config_poll_wait_seconds=poll_period)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            _verify_predict(stub, 3.0, model_name="half_plus_two", specify_output=False)
            _write_config(config, half_plus_three=half_plus_three_base)
            deadline = time.time() + (30 if poll_period else 1.0)
            while time.time() < deadline and srv.manager.names != ["half_plus_three"]:
                time.sleep(0.05)
            if poll_period:
                _verify_predict(stub, 4.0, model_name="half_plus_three", specify_output=False)
                with pytest.raises(grpc.RpcError) as err:
                    _verify_predict(stub, 3.0, model_name="half_plus_two")
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
            else:
                assert srv.manager.names == ["half_plus_two"]
                _verify_predict(stub, 3.0, model_name="half_plus_two", specify_output=False)
    finally:
        srv.stop()


def test_good_grpc_channel_args(half_plus_two_base):
    from vtcaps_tf.serving.grpc_service import parse_channel_arguments

    arguments = parse_channel_arguments("grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb")
    assert arguments == [("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb")]
    srv = _start([ModelSpec("default", half_plus_two_base)], grpc_channel_arguments=tuple(arguments))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            _verify_predict(prediction_service_pb2_grpc.PredictionServiceStub(channel), 3.0,
                            specify_output=False)
    finally:
        srv.stop()


def test_predict_uds(tmp_path, half_plus_two_base):
    """Predict over a Unix domain socket (--grpc_socket_path)."""
    socket_path = str(tmp_path / "tf-serving.sock")
    srv = _start([ModelSpec("default", half_plus_two_base)], grpc_socket_path=socket_path)
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            _verify_predict(prediction_service_pb2_grpc.PredictionServiceStub(channel), 3.0,
                            specify_output=False)
    finally:
        srv.stop()


def test_bad_model_config(tmp_path):
    bad = tmp_path / "bad_model_config.txt"
    bad.write_text("improperly formatted file\n")
    with pytest.raises(ConfigFileError, match="not a ModelServerConfig in text format"):
        read_model_config_file(str(bad))


def _tf2_base(tmp_path, save):
    base = tmp_path / "tf2_saved_model"
    save(str(base / half_plus_two.VERSION_FOLDER))
    return str(base)


def test_tf_saved_model_save(tmp_path):
    """A TF2 SavedModel whose input has no declared shape: y = 3 * 2 * x."""
    def save(path):
        root = tf.train.Checkpoint()
        root.v1 = tf.Variable(3.0)
        root.v2 = tf.Variable(2.0)
        root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
        tf.saved_model.save(root, path, root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))

    srv = _start([ModelSpec("default", _tf2_base(tmp_path, save))])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            _verify_predict(prediction_service_pb2_grpc.PredictionServiceStub(channel), 12.0,
                            specify_output=False)
    finally:
        srv.stop()


def test_tf_saved_model_save_multiple_signatures(tmp_path):
    def save(path):
        root = tf.train.Checkpoint()
        root.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
        root.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
        tf.saved_model.save(root, path, signatures={"serving_default": root.f,
                                                    "custom_signature_key": root.g})

    srv = _start([ModelSpec("default", _tf2_base(tmp_path, save))])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            _verify_predict(stub, 2.0, signature_name="custom_signature_key")
            _verify_predict(stub, 1.0)
    finally:
        srv.stop()


def test_sequential_keras_saved_model_save(tmp_path):
    """A Keras Sequential identity model, x [1,1] -> 2.0. Keras 3 names the signature's tensors
    `inputs` and `output_0` (Keras 2, in TF Serving's test, named them after the layers)."""
    import keras

    def save(path):
        model = keras.Sequential([keras.layers.Input(dtype="float32", shape=(1,), name="x"),
                                  keras.layers.Lambda(lambda x: x, name="y")])
        tf.saved_model.save(model, path)

    srv = _start([ModelSpec("default", _tf2_base(tmp_path, save))])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            _verify_predict(prediction_service_pb2_grpc.PredictionServiceStub(channel), 2.0,
                            batch_input=True, specify_output=False, input_name="inputs",
                            output_name="output_0")
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------
# REST


def test_classify_rest(server):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert _rest(server, ":classify", body) == {"results": [[["", 3.0]]]}


def test_regress_rest(server):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert _rest(server, ":regress", body) == {"results": [3.0]}


def test_predict_rest(server):
    assert _rest(server, ":predict", {"instances": [2.0, 3.0, 4.0]}) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_rest(server):
    assert _rest(server, ":predict", {"inputs": [2.0, 3.0, 4.0]}) == {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(server):
    assert _rest(server, "") == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def _tensor_info(name, dtype, dims):
    """TensorInfo as proto3 JSON with its defaults written out; dims None: unknown rank."""
    shape = ({"dim": [], "unknown_rank": True} if dims is None else
             {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False})
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def _signature(inputs, outputs, method):
    return {"inputs": inputs, "outputs": outputs, "method_name": f"tensorflow/serving/{method}",
            "defaults": {}}


def test_get_model_metadata_rest(server):
    examples = {"inputs": _tensor_info("tf_example:0", "DT_STRING", None)}
    column = [-1, 1]
    expected = {
        "model_spec": {"name": "default", "signature_name": "", "version": "123"},
        "metadata": {"signature_def": {"signature_def": {
            "regress_x2_to_y3": _signature({"inputs": _tensor_info("x2:0", "DT_FLOAT", column)},
                                           {"outputs": _tensor_info("y3:0", "DT_FLOAT", column)}, "regress"),
            "serving_default": _signature({"x": _tensor_info("x:0", "DT_FLOAT", column)},
                                          {"y": _tensor_info("y:0", "DT_FLOAT", column)}, "predict"),
            "classify_x_to_y": _signature(examples, {"scores": _tensor_info("y:0", "DT_FLOAT", column)},
                                          "classify"),
            "regress_x_to_y2": _signature(examples, {"outputs": _tensor_info("y2:0", "DT_FLOAT", column)},
                                          "regress"),
            "regress_x_to_y": _signature(examples, {"outputs": _tensor_info("y:0", "DT_FLOAT", column)},
                                         "regress"),
        }}},
    }
    assert _rest(server, "/metadata") == expected


# ---------------------------------------------------------------------------------------------
# the same semantics beyond TF Serving's test: more examples, features, errors


def test_grpc_metadata_matches_the_model(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = stub.GetModelMetadata(request, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    result.metadata["signature_def"].Unpack(sig_map)
    assert sorted(sig_map.signature_def) == ["classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y",
                                             "regress_x_to_y2", "serving_default"]
    assert result.model_spec.version.value == VERSION


def test_regress_several_examples_with_context(server):
    """Context features join every example; regress_x_to_y2 is 0.5 x + 3."""
    xs = [-4.0, 0.0, 1.5, 10.0]
    body = {"signature_name": "regress_x_to_y2", "context": {"unused": [1, 2]},
            "examples": [{"x": x} for x in xs]}
    assert _rest(server, ":regress", body) == {"results": [0.5 * x + 3.0 for x in xs]}


def test_regress_over_context_feature(server):
    """A feature given only in the context reaches each example (x from the context)."""
    body = {"signature_name": "regress_x_to_y", "context": {"x": 6.0}, "examples": [{}, {"x2": 1.0}]}
    assert _rest(server, ":regress", body) == {"results": [5.0, 5.0]}


def test_predict_batch_of_rows_2d(server):
    """Rows shaped as the signature declares ([n,1]) give [n,1] predictions."""
    assert _rest(server, ":predict", {"instances": [[1.0], [-2.0]]}) == {"predictions": [[2.5], [1.0]]}


def test_predict_rest_prints_float32_as_tf_serving(server):
    """y = 0.5 * 0.2f + 2 rounds to float32(2.1) (2.0999999046...): TF Serving prints 2.1."""
    assert _rest(server, ":predict", {"instances": [0.2]}) == {"predictions": [2.1]}


@pytest.mark.parametrize("verb, body, fragment", [
    (":classify", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]},
     "Expected classification signature method_name to be tensorflow/serving/classify"),
    (":regress", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
     "Expected regression signature method_name to be tensorflow/serving/regress"),
    (":regress", {"signature_name": "nope", "examples": [{"x": 2.0}]},
     "No signature was found with the name: nope"),
    (":regress", {"signature_name": "regress_x_to_y"}, "'examples'"),
    (":regress", {"signature_name": "regress_x_to_y", "examples": []}, "empty"),
    (":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": [2, 3.0]}]},
     "Unexpected element type in feature: x"),
    (":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": None}]}, "Null"),
    (":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": "two"}]}, "x"),
], ids=["classify on a regress signature", "regress on a classify signature", "unknown signature",
        "no examples key", "empty examples", "mixed int and float", "null feature",
        "string where the graph parses a float"])
def test_classify_regress_errors_are_400(server, verb, body, fragment):
    r = requests.post(f"{server.rest_url}/v1/models/default{verb}", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


def test_multi_inference_refuses_a_predict_task(stub):
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name = "default"
    task.method_name = "tensorflow/serving/predict"
    _example_input(request.input)
    with pytest.raises(grpc.RpcError) as err:
        stub.MultiInference(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_multi_inference_needs_one_input_tensor(stub):
    """regress_x2_to_y3 reads x2 directly, regress_x_to_y the examples: refused as TF Serving does."""
    request = inference_pb2.MultiInferenceRequest()
    for signature in ("regress_x_to_y", "regress_x2_to_y3"):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = "tensorflow/serving/regress"
    _example_input(request.input)
    with pytest.raises(grpc.RpcError) as err:
        stub.MultiInference(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Input tensor must be the same" in err.value.details()


def test_classify_with_empty_input_is_invalid(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_predict_output_values_are_typed_fields(stub):
    """Outputs come back in float_val (TF Serving's AsProtoField), not in tensor_content."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [3.0]], np.float32)))
    out = stub.Predict(request, timeout=30).outputs["y"]
    assert out.tensor_content == b""
    assert list(out.float_val) == [2.5, 3.5]
    assert [d.size for d in out.tensor_shape.dim] == [2, 1]


def test_version_folder_name_is_kept_for_loading(half_plus_two_base):
    """The served version's path is the folder as named on disk, zero padding included."""
    srv = ModelServer([ModelSpec("default", half_plus_two_base)],
                      ServerConfig(rest_port=None, grpc_port=None, poll_wait_seconds=0))
    srv.manager.start()
    try:
        servable = srv.manager.get("default")
        assert servable.version == VERSION
        assert os.path.basename(servable.path) == "00000123"
    finally:
        srv.stop()
