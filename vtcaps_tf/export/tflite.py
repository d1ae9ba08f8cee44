"""TFLite export of a SavedModel's `serving_default`, for hosts without TensorFlow.

`write_tflite(version_dir, mode)` converts the signature of an exported version
(`vtcaps_tf.export.saved_model`) and writes, beside its `saved_model.pb`:
- `model.tflite`: the signature `serving_default`, with the SavedModel's inputs (`frames` uint8
  [B,N,S,S,3], `landmarks` float32 [B,N,68,2], any batch size) and its numeric outputs
  (`probabilities`, `capsule_lengths` float32 [B,C]). The `classes` strings are not a TFLite output;
- `model.tflite.json`: the class names (the SavedModel's `classes`), the mode and the input shapes,
  which `vtcaps_tf.export.tflite_runtime.TFLiteModel` reads to answer as the SavedModel does.

The graph converts to TFLite builtin ops alone (no Select TF op, no custom op): the TFLite runtime
(`ai-edge-litert`) runs it without TensorFlow. Modes:
- `fp32`: float32 throughout, the SavedModel's outputs to float32 rounding;
- `dynamic`: dynamic-range quantization: int8 weights, activations quantized on the fly;
- `int8`: full integer quantization of the network, its activation ranges calibrated on clips of a
  preprocessing output (`calibration_data`, read with the training reader). The AU map rendering
  and the capsule routing stay float32 (`FLOAT_SCOPES`).
Inputs and outputs keep their types in every mode.

`tflite_writer(mode, ...)` is the hook for `saved_model.save_serving_model(..., after_save=...)`:
it writes both files into the hidden directory before the version is renamed into place.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from vtcaps_tf.errors import UsageError
from vtcaps_tf.export.tflite_runtime import INFO_FILE, SIGNATURE, TFLITE_FILE, interpreter_class
from vtcaps_tf.utils import atomic_files

MODES = ("fp32", "dynamic", "int8")
OUTPUT_NAMES = ("probabilities", "capsule_lengths")
# Clips the int8 mode calibrates its activation ranges on (fewer when the split holds fewer).
DEFAULT_CALIBRATION_CLIPS = 200
# Layers int8 mode keeps float32: the AU map rendering (`VT3DCapsNet.au_render`), whose pixel
# arithmetic is exact in float32 only, and the dynamic routing (`digit_caps`), whose softmax
# iterations compound rounding errors, for little compute.
FLOAT_SCOPES = ("au_render", "digit_caps")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"TFLite mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _calibration_source(calibration_data: str | None, split: str | None) -> str:
    if not calibration_data:
        raise UsageError("TFLite int8 mode needs calibration data: a preprocessing output directory")
    return pick_calibration_split(calibration_data, split)


def _numeric_signature(saved_model_dir: str, workdir: str):
    """Save, under `workdir`, a SavedModel whose `serving_default` is the exported one less its
    `classes` output; returns (its path, the input specs {name: TensorSpec}, the class names)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    if SIGNATURE not in loaded.signatures:
        raise UsageError(f"{saved_model_dir!r} has no {SIGNATURE!r} signature")
    signature = loaded.signatures[SIGNATURE]
    specs = dict(signature.structured_input_signature[1])
    if "long_frames" in specs:
        raise UsageError(f"{saved_model_dir!r} serves the TPN-ERM teacher (exported --with-teacher); "
                         "convert an export of the served model")
    zeros = {k: tf.zeros([1] + spec.shape.as_list()[1:], spec.dtype) for k, spec in specs.items()}
    classes = [c.decode() for c in signature(**zeros)["classes"].numpy()[0]]
    names = sorted(specs)

    @tf.function(input_signature=[specs[k] for k in names])
    def serve(*args):
        out = signature(**dict(zip(names, args)))
        return {k: out[k] for k in OUTPUT_NAMES if k in out}

    module = tf.Module()
    module.exported = loaded  # its variables
    module.serve = serve
    path = os.path.join(workdir, "numeric")
    tf.saved_model.save(module, path, signatures={SIGNATURE: serve.get_concrete_function()})
    return path, specs, classes


def pick_calibration_split(data_dir: str, split: str | None = None) -> str:
    """The split of a preprocessing output that int8 calibrates on: `split`, default `train`, or
    the first fold of a cross-validation output; UsageError when the directory is not one."""
    from vtcaps_tf.data import features

    try:
        splits = features.data_splits(features.read_metadata(data_dir))
    except features.SchemaError as err:
        raise UsageError(f"calibration data: {err}") from err
    split = split or ("train" if "train" in splits else splits[0])
    if split not in splits:
        raise UsageError(f"calibration data: {data_dir!r} has no split {split!r} (it has {', '.join(splits)})")
    return split


def calibration_clips(data_dir: str, specs: dict, count: int = DEFAULT_CALIBRATION_CLIPS,
                      split: str | None = None) -> list[dict]:
    """Up to `count` clips ({input name: array with a batch axis of 1}) of a preprocessing output,
    decoded by the training reader for inputs of `specs` (the signature's TensorSpecs). `split`:
    default `train`, or the first fold of a cross-validation output."""
    from vtcaps_tf.data import features
    from vtcaps_tf.data.contract import InputContract
    from vtcaps_tf.data.dataset import read_split

    split = pick_calibration_split(data_dir, split)
    try:
        frames = specs["frames"].shape
        # The served clip alone: a long window as long as the clip starts where the clip does.
        contract = InputContract(clip_frames=int(frames[1]), long_frames=int(frames[1]),
                                 image_size=int(frames[2]))
        dataset = read_split(data_dir, split, contract)
    except (features.SchemaError, ValueError) as err:
        raise UsageError(f"calibration data: {err}") from err
    clips = [{k: v.numpy()[None] for k, v in inputs.items() if k in specs}
             for inputs, _ in dataset.take(count)]
    if not clips:
        raise UsageError(f"calibration data: {data_dir!r} has no clips in its {split} split")
    return clips


def in_scopes(tensor_name: str, scopes) -> bool:
    """Whether a TFLite tensor lies in one of the Keras layers named `scopes`: a layer's name is
    a component of the tensor's path, with the `_1` TensorFlow appends to a called layer's scope
    (a fused tensor's name joins its sources' names with ';')."""
    return any(re.sub(r"_\d+$", "", part) in scopes
               for source in tensor_name.split(";") for part in source.split("/"))


def float_nodes(model_content: bytes, scopes=FLOAT_SCOPES) -> list[str]:
    """Names of the tensors of a TFLite model that lie in the layers named `scopes`."""
    interpreter = interpreter_class()(model_content=model_content)
    return sorted(d["name"] for d in interpreter.get_tensor_details() if in_scopes(d["name"], scopes))


def _convert(path: str, mode: str, clips: list[dict] | None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "fp32":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "dynamic":
        return converter.convert()
    # Samples as dicts by input name: the converted model orders its inputs its own way.
    converter.representative_dataset = lambda: iter(clips)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=lambda: iter(clips))
    keep_float = float_nodes(debugger.calibrated_model)
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep_float)
    return debugger.get_nondebug_quantized_model()


def convert_saved_model(saved_model_dir: str, mode: str = "fp32", calibration_data: str | None = None,
                        calibration_count: int = DEFAULT_CALIBRATION_CLIPS,
                        calibration_split: str | None = None) -> tuple[bytes, dict]:
    """(the .tflite model's bytes, its description for `INFO_FILE`) of the SavedModel's
    `serving_default` in `mode` (see the module docstring); int8 needs `calibration_data`, a
    preprocessing output's directory."""
    _check_mode(mode)
    if mode == "int8":
        calibration_split = _calibration_source(calibration_data, calibration_split)
    workdir = tempfile.mkdtemp(prefix="vtcaps-tflite-")
    try:
        path, specs, classes = _numeric_signature(saved_model_dir, workdir)
        clips = (calibration_clips(calibration_data, specs, calibration_count, calibration_split)
                 if mode == "int8" else None)
        content = _convert(path, mode, clips)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info = {
        "mode": mode,
        "signature": SIGNATURE,
        "classes": classes,
        "inputs": {k: {"shape": [None] + spec.shape.as_list()[1:], "dtype": spec.dtype.name}
                   for k, spec in specs.items()},
        "outputs": list(OUTPUT_NAMES),
        "calibration_clips": len(clips) if clips else None,
    }
    return content, info


def write_tflite(saved_model_dir: str, mode: str = "fp32", calibration_data: str | None = None,
                 calibration_count: int = DEFAULT_CALIBRATION_CLIPS,
                 calibration_split: str | None = None) -> str:
    """Convert the SavedModel in `saved_model_dir` and write `TFLITE_FILE` and `INFO_FILE` beside
    it; returns the .tflite path. Refuses to overwrite an existing one (FileExistsError)."""
    target = os.path.join(saved_model_dir, TFLITE_FILE)
    if os.path.exists(target):
        raise FileExistsError(f"{target} exists")
    content, info = convert_saved_model(saved_model_dir, mode, calibration_data, calibration_count,
                                        calibration_split)
    # The model last: `has_tflite` looks for it, and its info must be there by then.
    atomic_files.write_json(os.path.join(saved_model_dir, INFO_FILE), info)
    return atomic_files.write_bytes(target, content)


def tflite_writer(mode: str = "fp32", calibration_data: str | None = None,
                  calibration_count: int = DEFAULT_CALIBRATION_CLIPS,
                  calibration_split: str | None = None):
    """The `after_save` hook of `saved_model.save_serving_model`: a function of the hidden
    version directory that writes the TFLite model into it. The arguments are checked now, so a
    wrong mode fails before the SavedModel is written."""
    _check_mode(mode)
    if mode == "int8":
        calibration_split = _calibration_source(calibration_data, calibration_split)

    def write(version_dir: str) -> None:
        write_tflite(version_dir, mode, calibration_data, calibration_count, calibration_split)

    return write
