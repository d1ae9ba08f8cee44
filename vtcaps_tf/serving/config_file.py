"""TF Serving's --model_config_file: a ModelServerConfig in protobuf text format.

    model_config_list {
      config { name: "vtcaps" base_path: "/models/vtcaps" model_platform: "tensorflow"
               model_version_policy { latest { num_versions: 2 } }
               version_labels { key: "stable" value: 1 } }
    }
"""

from __future__ import annotations

import logging

from vtcaps_tf.errors import UsageError
from vtcaps_tf.serving.errors import ServingError
from vtcaps_tf.serving.servables import ModelSpec, VersionPolicy

log = logging.getLogger(__name__)


class ConfigFileError(UsageError):
    """The model config file cannot be used (bad input: exit status 2)."""


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


class ConfigFileWatcher:
    """Re-reads a model config file every `poll_wait_seconds` and applies it when it changed
    (TF Serving's --model_config_file_poll_wait_seconds): models added load, models removed go,
    unchanged ones keep serving. A file that cannot be read or parsed is logged and the models
    keep serving as they are."""

    def __init__(self, path: str, manager, poll_wait_seconds: float, applied: list[ModelSpec]):
        import threading

        self.path = path
        self.manager = manager
        self.poll_wait_seconds = poll_wait_seconds
        self._applied = list(applied)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vtcaps-config-poll", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def check(self) -> bool:
        """Read the file once; True when it changed and was applied."""
        try:
            specs = read_model_config_file(self.path)
        except ConfigFileError as err:
            log.error("model config file not applied, the models keep serving: %s", err)
            return False
        if specs == self._applied:
            return False
        try:
            self.manager.reload(specs)
        except (ValueError, ServingError) as err:
            log.error("model config file not applied, the models keep serving: %s",
                      getattr(err, "message", err))
            return False
        self._applied = specs
        log.info("model config file %s applied: %s", self.path, ", ".join(s.name for s in specs))
        return True

    def _loop(self):
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must survive a bad reload
                log.exception("model config reload failed")

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
