"""Status and metadata answers as TF Serving's protos; REST prints the same protos as JSON."""

from __future__ import annotations

from vtcaps_tf.serving.servables import ModelManager


def model_spec_proto(name: str, version: int | None = None, signature_name: str | None = None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name
    return spec


def status_response(manager: ModelManager, name: str, version=None, label=None):
    """GetModelStatusResponse for one model (one version when `version` or `label` is given)."""
    from tensorflow.core.protobuf import error_codes_pb2
    from tensorflow_serving.apis import get_model_status_pb2

    states = get_model_status_pb2.ModelVersionStatus.State
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, status in manager.model(name).status(version, label):
        entry = response.model_version_status.add()
        entry.version = v
        entry.state = states.Value(status.state)
        entry.status.error_code = error_codes_pb2.Code.Value(status.error_code)
        entry.status.error_message = status.error_message
    return response


def metadata_response(manager: ModelManager, name: str, version=None, label=None, fields=("signature_def",)):
    """GetModelMetadataResponse with the SignatureDefMap of the served version."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    from vtcaps_tf.serving.errors import invalid

    if not fields:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != "signature_def":
            raise invalid(f"Metadata field {field} is not supported")
    servable = manager.get(name, version, label)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.CopyFrom(model_spec_proto(name, servable.version, ""))
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in servable.signature_defs.items():
        sig_map.signature_def[key].CopyFrom(sig)
    response.metadata["signature_def"].Pack(sig_map)
    return response, sig_map
