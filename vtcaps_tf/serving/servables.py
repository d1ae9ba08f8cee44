"""Model versions on disk -> loaded servables, as TF Serving manages them (the Keras models
themselves live in `vtcaps_tf.models`).

A model is a base path holding integer version folders (`vtcaps_tf.export.versions` reads them); a
version is ready once its `saved_model.pb` exists. `ModelManager.poll()` loads the versions the policy wants (the newest one
by default), and only after a new version has loaded does it swap the served set (one reference
assignment) and let go of versions the policy no longer wants: requests already running keep
their reference to the old servable and finish on it. With TFLite options that prefer it
(`vtcaps serve --prefer_tflite_model`), a version holding `model.tflite` answers from the TFLite
interpreters (`tflite_signatures`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

import numpy as np

from vtcaps_tf.serving.errors import ServingError, invalid, not_found
from vtcaps_tf.export.versions import version_dirs

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
# Version states as in tensorflow_serving/apis/get_model_status.proto.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
MAX_LOAD_ATTEMPTS = 5  # as TF Serving's --max_num_load_retries


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which ready versions to serve: the newest `num_versions`, all of them, or a given set."""

    kind: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(f"version policy must be latest, all or specific, got {self.kind!r}")
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError("latest version policy needs num_versions >= 1")
        if self.kind == "specific" and not self.versions:
            raise ValueError("specific version policy needs at least one version")

    def select(self, ready: list[int]) -> set[int]:
        if self.kind == "all":
            return set(ready)
        if self.kind == "specific":
            return set(ready) & set(self.versions)
        return set(sorted(ready)[-self.num_versions:])


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One served model: TF Serving's ModelConfig reduced to what this server uses."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: tuple[tuple[str, int], ...] = ()  # version label -> version

    def __post_init__(self):
        if not self.name or "/" in self.name or ":" in self.name:
            raise ValueError(f"model name must be non-empty without '/' or ':', got {self.name!r}")
        if not self.base_path:
            raise ValueError(f"model {self.name!r} needs a base path")


def ready_versions(base_path: str) -> list[int]:
    """Version numbers under `base_path` whose SavedModel file exists, ascending."""
    return sorted(version_dirs(base_path))


def read_meta_graph(export_dir: str, tags=("serve",)):
    """(MetaGraphDef tagged `serve`, is_v1): is_v1 when the SavedModel is a TF1 graph (no object
    graph), which tf.saved_model.load runs as pruned graph functions."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    pb = os.path.join(export_dir, "saved_model.pb")
    if tf.io.gfile.exists(pb):
        with tf.io.gfile.GFile(pb, "rb") as f:
            proto.ParseFromString(f.read())
    else:
        with tf.io.gfile.GFile(os.path.join(export_dir, "saved_model.pbtxt")) as f:
            text_format.Parse(f.read(), proto)
    # The test tf.saved_model.load itself makes to choose its TF1 loader.
    is_v1 = not (len(proto.meta_graphs) == 1 and proto.meta_graphs[0].HasField("object_graph_def"))
    for meta_graph in proto.meta_graphs:
        if set(tags) <= set(meta_graph.meta_info_def.tags):
            return meta_graph, is_v1
    raise ValueError(f"{export_dir} has no MetaGraph tagged {list(tags)}")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """An input or output of a signature: its name, numpy dtype and shape (None = any size)."""

    name: str
    dtype: np.dtype
    shape: tuple | None  # None: unknown rank

    @classmethod
    def from_tensor_info(cls, name, info):
        import tensorflow as tf

        dtype = np.dtype(object) if info.dtype == tf.string.as_datatype_enum else \
            np.dtype(tf.as_dtype(info.dtype).as_numpy_dtype)
        if info.tensor_shape.unknown_rank:
            return cls(name, dtype, None)
        return cls(name, dtype, tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim))

    def shape_text(self) -> str:
        if self.shape is None:
            return "<unknown rank>"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"

    def check(self, arr: np.ndarray):
        if self.shape is None:
            return
        ok = arr.ndim == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, arr.shape))
        if not ok:
            got = "[" + ",".join(str(d) for d in arr.shape) + "]"
            raise invalid(f"input '{self.name}' has shape {got}; the signature expects "
                          f"{self.shape_text()} (-1: any size)")


class Signature:
    """One callable signature of a loaded version, with its input and output specs."""

    def __init__(self, name, signature_def, function, graph_v1: bool = False):
        self.name = name
        self.signature_def = signature_def
        self.function = function
        self.inputs = {k: TensorSpec.from_tensor_info(k, v) for k, v in signature_def.inputs.items()}
        self.outputs = {k: TensorSpec.from_tensor_info(k, v) for k, v in signature_def.outputs.items()}
        self.method_name = signature_def.method_name
        # TF Serving feeds each tensor as given and lets the graph decide; it checks no shape. A TF1
        # graph takes any shape its ops can compute (`[2.0, 3.0, 4.0]` into an `x` declared
        # [-1,1] gives y of shape [3]), so nothing is checked here either. A TF2 function was
        # traced for its declared shapes and refuses others: those get a clear error up front.
        self.checks_shapes = not graph_v1
        # Set by the Servable: the Batcher merging concurrent calls (None: each call runs alone),
        # the ServingMetrics timing each model call, and, for a signature over serialized
        # records, the model's crop side that their JPEG frames may not exceed (`frame_guard`).
        self.batcher = None
        self.metrics = None
        self.model_name = ""
        self.crop_size: int | None = None

    def check_inputs(self, inputs: dict):
        missing = sorted(set(self.inputs) - set(inputs))
        extra = sorted(set(inputs) - set(self.inputs))
        if missing or extra:
            raise invalid(f"input names do not match signature '{self.name}': expected "
                          f"{sorted(self.inputs)}; missing {missing}, unexpected {extra}")

    def run(self, inputs: dict[str, np.ndarray], output_filter=None) -> dict[str, np.ndarray]:
        """Validated call: `inputs` must already have the signature's dtypes."""
        self.check_inputs(inputs)
        for key, arr in inputs.items():
            spec = self.inputs[key]
            if spec.dtype != object and arr.dtype != spec.dtype:
                raise invalid(f"input '{key}' must be {spec.dtype.name}, got {arr.dtype.name}")
            if self.checks_shapes:
                spec.check(arr)
        wanted = list(output_filter) if output_filter else list(self.outputs)
        unknown = [k for k in wanted if k not in self.outputs]
        if unknown:
            raise invalid(f"output filter names unknown outputs {unknown}; signature "
                          f"'{self.name}' has {sorted(self.outputs)}")
        if self.crop_size is not None:
            from vtcaps_tf.serving.frame_guard import check_records

            check_records(np.asarray(next(iter(inputs.values())), dtype=object).reshape(-1), self.crop_size)
        if self.batcher is None:
            return self._timed_invoke(inputs, wanted)
        outputs = self.batcher.run(inputs)
        return {k: outputs[k] for k in wanted}

    def batched_call(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output for a merged batch (the Batcher's function)."""
        return self._timed_invoke(inputs, list(self.outputs))

    def _timed_invoke(self, inputs, wanted) -> dict[str, np.ndarray]:
        if self.metrics is None:
            return self._invoke(inputs, wanted)
        t0 = time.perf_counter()
        try:
            return self._invoke(inputs, wanted)
        finally:
            self.metrics.runtime_latency.labels(self.model_name, self.name, self.runtime).observe(
                (time.perf_counter() - t0) * 1e6)

    runtime = "TF"

    def _invoke(self, inputs: dict[str, np.ndarray], wanted) -> dict[str, np.ndarray]:
        """The signature's function on checked inputs -> the `wanted` outputs as numpy."""
        import tensorflow as tf

        feed = {k: tf.constant(v, dtype=tf.string) if self.inputs[k].dtype == object else tf.constant(v)
                for k, v in inputs.items()}
        try:
            result = self.function(**feed)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as err:
            raise invalid(f"the model rejected the inputs: {_first_line(err)}") from None
        except tf.errors.OpError as err:
            raise ServingError("INTERNAL", f"model execution failed: {_first_line(err)}") from None
        return {k: result[k].numpy() for k in wanted}


class TFLiteSignature(Signature):
    """A signature answered by a version's TFLite model (`tflite_signatures`): `function` takes
    and returns numpy arrays."""

    runtime = "TFLite"

    def _invoke(self, inputs: dict[str, np.ndarray], wanted) -> dict[str, np.ndarray]:
        result = self.function(inputs)
        return {k: result[k] for k in wanted}


def _first_line(err) -> str:
    text = getattr(err, "message", None) or str(err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


class Servable:
    """One loaded version of a model. With `tflite` options that prefer it, a version holding a
    `model.tflite` answers `serving_default` and `serve_examples` from it (`tflite_signatures`)
    and loads its SavedModel only for any other signature; `self.tflite` is then the
    `TFLiteModel`, else None. `warmup`: called with the loaded version before it is served
    (`vtcaps_tf.serving.warmup.warm_up`; None: no warm-up); `batching`: `BatchingOptions`, a
    `Batcher` per signature (None: each call alone); `metrics`: `ServingMetrics` or None."""

    def __init__(self, name: str, version: int, path: str, warmup=None, tflite=None,
                 batching=None, metrics=None):
        self.name = name
        self.version = version
        self.path = path
        meta_graph, self.graph_v1 = read_meta_graph(path)
        self.signature_defs = meta_graph.signature_def
        self.tflite = None
        self.signatures = {}
        if tflite is not None and tflite.prefer:
            from vtcaps_tf.export.tflite_runtime import TFLiteModel
            from vtcaps_tf.serving.tflite_signatures import has_tflite, tflite_signatures

            if has_tflite(path):
                self.tflite = TFLiteModel(path, tflite.interpreters)
                self.signatures = tflite_signatures(self.tflite, self.signature_defs, TFLiteSignature)
        self._loaded = None
        # Keys of the form __name__ are the SavedModel's own (its init op), not signatures.
        if any(k not in self.signatures and not k.startswith("__") for k in self.signature_defs):
            import tensorflow as tf

            self._loaded = tf.saved_model.load(path, tags=["serve"])
            self.signatures.update({
                key: Signature(key, self.signature_defs[key], fn, self.graph_v1)
                for key, fn in self._loaded.signatures.items()
                if key in self.signature_defs and key not in self.signatures})
        self.crop_size = _crop_size(self.signatures.get(DEFAULT_SIGNATURE))
        for sig in self.signatures.values():
            sig.model_name, sig.metrics = name, metrics
            if self.crop_size is not None and set(sig.inputs) == {"examples"}:
                sig.crop_size = self.crop_size
            if batching is not None:
                from vtcaps_tf.serving.batching import Batcher

                sig.batcher = Batcher(sig.batched_call, batching, metrics, f"{name}-v{version}-{sig.name}")
        if warmup:
            warmup(self)

    def stop(self):
        """End the batch threads once their queued batches ran; later calls run unbatched."""
        for sig in self.signatures.values():
            if sig.batcher is not None:
                sig.batcher.stop()

    def signature(self, name: str | None) -> Signature:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found. '
                               f"Signatures: {sorted(self.signatures)}")
        return self.signatures[name]



def _crop_size(sig) -> int | None:
    """S of a vtcaps export's `frames` input [B, N, S, S, 3]; None for other models."""
    spec = sig.inputs.get("frames") if sig is not None else None
    if spec is None or spec.shape is None or len(spec.shape) != 5 or spec.shape[2] is None:
        return None
    return int(spec.shape[2])


def release_freed_memory() -> None:
    """Collect the unloaded version's objects and hand the freed heap back to the system: glibc
    keeps freed memory in its arenas, so without `malloc_trim` every hot swap would leave the
    server's RSS about one model larger. Elsewhere than glibc this only collects."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


@dataclasses.dataclass
class VersionStatus:
    state: str
    error_code: str = "OK"
    error_message: str = ""
    attempts: int = 0


class ServedModel:
    """The versions of one model: the served set is an immutable dict replaced as a whole."""

    def __init__(self, spec: ModelSpec, warmup=None, tflite=None, batching=None, metrics=None):
        self.spec = spec
        # How each version loads (`Servable`'s arguments).
        self.load_options = dict(warmup=warmup, tflite=tflite, batching=batching, metrics=metrics)
        self._served: dict[int, Servable] = {}
        self._status: dict[int, VersionStatus] = {}
        self._lock = threading.Lock()  # one poll at a time
        self.list_error: str | None = None  # why the base path could not be read at the last poll
        self._release_pending = False  # a version was unloaded at the last poll

    def _read_versions(self) -> dict[int, str] | None:
        """The version folders, or None when the base path cannot be read: logged (once until it
        changes or clears); the versions already served stay, and the next poll tries again."""
        try:
            folders = version_dirs(self.spec.base_path)
        except OSError as err:
            if str(err) != self.list_error:
                log.error("model %s: %s; serving the versions already loaded and polling on",
                          self.spec.name, err)
            self.list_error = str(err)
            return None
        if self.list_error is not None:
            log.info("model %s: base path %s is readable again", self.spec.name, self.spec.base_path)
            self.list_error = None
        return folders

    def poll(self):
        with self._lock:
            if self._release_pending:
                release_freed_memory()
                self._release_pending = False
            folders = self._read_versions()
            if folders is None:
                return
            wanted = self.spec.policy.select(list(folders))
            served = dict(self._served)
            for version in sorted(wanted - set(served), reverse=True):
                status = self._status.get(version)
                if status and status.state == END and status.attempts >= MAX_LOAD_ATTEMPTS:
                    continue
                servable = self._load(version, folders[version], status)
                if servable is not None:
                    served[version] = servable
            # Unload only once every wanted version that could load is in: availability first.
            keep = {v: s for v, s in served.items() if v in wanted}
            if not keep and served:
                # No wanted version could load (or the folders vanished): keep serving what there
                # is rather than answer nothing.
                keep = served
            self._served = keep
            unloaded = set(served) - set(keep)
            for version in unloaded:
                self._status[version] = VersionStatus(END)
                served[version].stop()
                log.info("model %s: unloaded version %d", self.spec.name, version)
            # The requests still holding an unloaded version let go of it within moments: its
            # memory is handed back at the next poll, once they have.
            self._release_pending = bool(unloaded)

    def _load(self, version, folder, status):
        path = os.path.join(self.spec.base_path, folder)  # the folder's own name: 00000123 stays
        attempts = (status.attempts if status else 0) + 1
        self._status[version] = VersionStatus(LOADING, attempts=attempts)
        t0 = time.perf_counter()
        try:
            servable = Servable(self.spec.name, version, path, **self.load_options)
        except Exception as err:  # noqa: BLE001 - any load failure is reported in the status
            self._status[version] = VersionStatus(END, "UNKNOWN", f"loading failed: {_first_line(err)}",
                                                  attempts)
            log.error("model %s: version %d failed to load (attempt %d): %s",
                      self.spec.name, version, attempts, err)
            return None
        self._status[version] = VersionStatus(AVAILABLE, attempts=attempts)
        log.info("model %s: version %d loaded in %.1f s", self.spec.name, version,
                 time.perf_counter() - t0)
        return servable

    def get(self, version: int | None = None, label: str | None = None) -> Servable:
        served = self._served  # one read: a concurrent swap cannot change it under us
        if label is not None:
            labels = dict(self.spec.labels)
            if label not in labels:
                raise not_found(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            if not served:
                raise not_found(f"Servable not found for request: Latest({self.spec.name})")
            return served[max(served)]
        if version not in served:
            raise not_found(f"Servable not found for request: Specific({self.spec.name}, {version})")
        return served[version]

    def status(self, version: int | None = None, label: str | None = None) -> list[tuple[int, VersionStatus]]:
        statuses = self._status.copy()  # the poller may add entries meanwhile
        if label is not None:
            labels = dict(self.spec.labels)
            if label not in labels:
                raise not_found(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is not None:
            if version not in statuses:
                raise not_found(f"Could not find version {version} of model {self.spec.name}")
            return [(version, statuses[version])]
        if not statuses:
            raise not_found(f"Could not find any versions of model {self.spec.name}")
        return sorted(statuses.items(), reverse=True)

    @property
    def versions(self) -> list[int]:
        return sorted(self._served)

    def stop(self):
        for servable in self._served.values():
            servable.stop()


class ModelManager:
    """All served models; `start()` loads them and polls their base paths in a background thread.
    `tflite`: `tflite_signatures.TFLiteOptions` (None: every version from its SavedModel)."""

    def __init__(self, specs: list[ModelSpec], poll_wait_seconds: float = 1.0, warmup=None,
                 tflite=None, batching=None, metrics=None):
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        self.poll_wait_seconds = poll_wait_seconds
        self.load_options = dict(warmup=warmup, tflite=tflite, batching=batching, metrics=metrics)
        self._models = {s.name: ServedModel(s, **self.load_options) for s in specs}
        self._stop = threading.Event()
        self._thread = None

    def model(self, name: str) -> ServedModel:
        models = self._models
        if name not in models:
            raise not_found(f"Servable not found for request: Latest({name})")
        return models[name]

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        return self.model(name).get(version, label)

    def poll(self):
        for model in list(self._models.values()):
            model.poll()

    def reload(self, specs: list[ModelSpec]):
        """Replace the model set (ModelService.HandleReloadConfigRequest); unchanged models stay loaded."""
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise invalid(f"model names must be unique, got {names}")
        new = {}
        for spec in specs:
            old = self._models.get(spec.name)
            if old is not None and old.spec == spec:
                new[spec.name] = old
            else:
                model = ServedModel(spec, **self.load_options)
                model.poll()
                new[spec.name] = model
        old_models, self._models = self._models, new
        for name, model in old_models.items():
            if new.get(name) is not model:
                model.stop()

    @property
    def names(self) -> list[str]:
        return sorted(self._models)

    def start(self):
        """Load what is on disk now, then keep polling (poll_wait_seconds <= 0: load once only)."""
        self.poll()
        if self.poll_wait_seconds > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll_loop, name="vtcaps-version-poll",
                                            daemon=True)
            self._thread.start()
        return self

    def _poll_loop(self):
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the poller must survive a bad file system read
                log.exception("version poll failed")

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for model in list(self._models.values()):
            model.stop()
