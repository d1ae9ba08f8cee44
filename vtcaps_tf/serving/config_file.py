"""TF Serving's --model_config_file: a ModelServerConfig in protobuf text format.

    model_config_list {
      config { name: "vtcaps" base_path: "/models/vtcaps" model_platform: "tensorflow"
               model_version_policy { latest { num_versions: 2 } }
               version_labels { key: "stable" value: 1 } }
    }
"""

from __future__ import annotations

from vtcaps_tf.serving.models import ModelSpec, VersionPolicy


class ConfigFileError(ValueError):
    """The model config file cannot be used."""


def specs_from_proto(config) -> list[ModelSpec]:
    """ModelServerConfig proto -> ModelSpecs (relative base paths are kept as given)."""
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigFileError("only model_config_list is supported (no custom_model_config)")
    specs = []
    for entry in config.model_config_list.config:
        if not entry.name:
            raise ConfigFileError("every config needs a name")
        if not entry.base_path:
            raise ConfigFileError(f"model {entry.name!r} needs a base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigFileError(f"model {entry.name!r}: model_platform {entry.model_platform!r} "
                                  "is not served (only 'tensorflow' SavedModels)")
        choice = entry.model_version_policy.WhichOneof("policy_choice")
        if choice == "all":
            policy = VersionPolicy("all")
        elif choice == "specific":
            policy = VersionPolicy("specific", versions=tuple(entry.model_version_policy.specific.versions))
        elif choice == "latest":
            policy = VersionPolicy("latest", num_versions=entry.model_version_policy.latest.num_versions or 1)
        else:
            policy = VersionPolicy()
        try:
            specs.append(ModelSpec(entry.name, entry.base_path, policy,
                                   tuple(sorted(entry.version_labels.items()))))
        except ValueError as err:
            raise ConfigFileError(str(err)) from None
    if not specs:
        raise ConfigFileError("the config names no model")
    return specs


def read_model_config_file(path: str) -> list[ModelSpec]:
    """Parse a model config file (relative base paths are relative to the working directory, as in
    TF Serving)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ConfigFileError(f"cannot read model config file {path}: {err.strerror}") from None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ConfigFileError(f"{path}: not a ModelServerConfig in text format: {err}") from None
    return specs_from_proto(config)
