"""Versioned SavedModel export for TensorFlow Serving (docs/design.md section 10).

`base_path/<version>/` holds a SavedModel with two signatures:
- `serving_default`: the model's named inputs (`vtcaps_tf.data.contract.InputContract`): `frames`
  uint8 [B,N,S,S,3] and `landmarks` float32 [B,N,68,2] (x, y in [0, 1] of the crop); the model
  draws the AU attention map from the landmarks;
- `serve_examples`: `examples`, serialized SequenceExamples of one clip each (the schema's records,
  as `vtcaps predict --server` sends them; a record of several clips is refused), parsed and
  decoded inside the graph by the same contract as training's reader.
Both return `probabilities`, `capsule_lengths` (with capsules) and `classes` (string [B,C]: the
label names, a constant in the graph).

By default the export serves what predicts: 3D-CapsNet only. TPN-ERM is a training-time teacher
(its feature-matching loss shapes 3D-CapsNet); its backbone is not in the serving graph and
`serving_default` takes no `long_frames`. `export_model(..., with_teacher=True)` (`vtcaps export
--with-teacher`) keeps it: `serving_default` then also takes `long_frames` uint8 [B,M,S,S,3],
`serve_examples` decodes the record's long window, and both add `tpn_probabilities`.

The SavedModel holds the variables the signatures read, not the Keras model's object tree (whose
traversal was most of the save's time), so neither a teacher that is not served nor the
reconstruction decoder is stored.

Versions are integers; an existing version is never overwritten. The SavedModel is written into a
hidden temporary directory beside the versions (TF Serving ignores names that are not integers) and
renamed into place in one step, so a polling server never sees half a model; the warm-up requests
(`assets.extra/tf_serving_warmup_requests`, `vtcaps_tf.export.warmup_requests`) are written there
too, and an `after_save` hook adds its files there first (the TFLite model:
`vtcaps_tf.export.tflite.tflite_writer`).
"""

from __future__ import annotations

import os

import tensorflow as tf

from vtcaps_tf.errors import UsageError
from vtcaps_tf.export.versions import version_dirs
from vtcaps_tf.utils import atomic_files

OUTPUT_NAMES = ("probabilities", "capsule_lengths", "tpn_probabilities")


class VersionExistsError(UsageError, FileExistsError):
    """The version asked for exists already: versions are never overwritten (exit status 2)."""


def existing_versions(base_path: str) -> list[int]:
    """Version numbers under base_path, ascending: every version folder, ready or not (a
    half-written export still holds its number)."""
    return sorted(version_dirs(base_path, ready=False))


def serving_fns(model, with_teacher: bool = False):
    """The two signature functions (tf.function with input signatures) for `model` (a
    VT3DCapsNet); `with_teacher` keeps the TPN-ERM head (see the module docstring)."""
    if not hasattr(model, "serving_outputs") or getattr(model, "contract", None) is None:
        raise ValueError("the model has no input contract: build it with vtcaps_tf.models.build_model")
    class_names = [str(c) for c in getattr(model, "class_names", None) or []]
    if not class_names:
        raise ValueError("the model carries no class_names")
    with_teacher = bool(with_teacher and model.config.use_tpn)
    contract = model.contract
    specs = contract.tensor_specs(None, with_teacher)
    names = list(specs)

    def _outputs(inputs):
        out = model.serving_outputs(inputs, with_teacher=with_teacher)
        result = {k: tf.cast(out[k], tf.float32) for k in OUTPUT_NAMES if k in out}
        if "probabilities" not in result:
            raise ValueError("the model's outputs lack 'probabilities'")
        batch = tf.shape(result["probabilities"])[0]
        labels = tf.constant(class_names, dtype=tf.string)
        result["classes"] = tf.tile(labels[None, :], tf.stack([batch, 1]))
        return result

    @tf.function(input_signature=[specs[k] for k in names])
    def serve(*args):
        return _outputs(dict(zip(names, args)))

    one = {k: tf.TensorSpec(shape[1:], dtype) for k, (shape, dtype) in
           contract.shapes(None, with_teacher).items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        inputs = tf.map_fn(lambda e: contract.parse_example(e, with_teacher)[0], examples,
                           fn_output_signature=one)
        return _outputs(inputs)

    return serve, serve_examples


def save_serving_model(model, path: str, card: dict | None = None, with_teacher: bool = False,
                       after_save=None) -> str:
    """Write the SavedModel with both signatures at `path` (which must not exist), atomically:
    into a hidden sibling directory first, renamed into place once complete. The model card
    (`vtcaps_tf.export.model_card`; default: built from the model alone) goes to assets/model_card.json.
    `with_teacher`: keep TPN-ERM's `tpn_probabilities` (and the `long_frames` input).
    `after_save`: called with the hidden directory once the SavedModel and its card are in it,
    before the rename, to add files the version must hold when it appears (the TFLite model:
    `vtcaps_tf.export.tflite.tflite_writer`)."""
    from vtcaps_tf.export.model_card import build_model_card, write_model_card
    from vtcaps_tf.export.warmup_requests import write_warmup_requests

    path = os.path.abspath(path)
    if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)  # an empty directory prepared by the caller (a TFX Trainer does this)
    if os.path.exists(path):
        raise VersionExistsError(f"{path} exists; versions are never overwritten (pick another --version)")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    serve, serve_examples = serving_fns(model, with_teacher)
    signatures = {"serving_default": serve.get_concrete_function(),
                  "serve_examples": serve_examples.get_concrete_function()}
    module = tf.Module()
    # The variables the signatures read, and nothing else: not the Keras model's object tree (whose
    # traversal is most of the save's time), nor the weights of a teacher the export does not serve.
    used = {id(v): v for fn in signatures.values() for v in fn.variables}
    module.serving_variables = list(used.values())
    module.serve = serve
    module.serve_examples = serve_examples
    # Staged under a temporary name, synced, renamed: `serve` never sees a partial version, and
    # the rename fails if `path` appeared meanwhile with content.
    with atomic_files.atomic_path(path, replace=False) as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        write_model_card(tmp, card if card is not None else build_model_card(model))
        write_warmup_requests(tmp, model.contract, bool(with_teacher and model.config.use_tpn))
        if after_save is not None:
            after_save(tmp)
    return path


def export_model(model, base_path: str, version: int | None = None, card: dict | None = None,
                 with_teacher: bool = False, after_save=None) -> str:
    """Write `model` (and its model `card`) as `base_path/<version>/` and return that path.

    with_teacher=True also serves TPN-ERM's `tpn_probabilities` (and takes `long_frames`).
    after_save: see `save_serving_model`.
    version=None takes one more than the highest existing version (1 for a new base path).
    Raises VersionExistsError (a FileExistsError) when the version exists already.
    """
    base_path = os.path.abspath(base_path)
    os.makedirs(base_path, exist_ok=True)
    if version is None:
        version = (existing_versions(base_path) or [0])[-1] + 1
    if int(version) < 1:
        raise UsageError(f"version must be a positive integer, got {version}")
    target = os.path.join(base_path, str(int(version)))
    if os.path.exists(target):
        raise VersionExistsError(f"{target} exists; versions are never overwritten (pick another --version)")

    save_serving_model(model, target, card, with_teacher, after_save)
    return target


def export_trained(model_path: str, base_path: str, version: int | None = None,
                   evaluation: str | None = None, with_teacher: bool = False,
                   tflite: str | None = None, calibration_data: str | None = None,
                   calibration_clips: int | None = None) -> str:
    """`vtcaps export` as a function: load the trained `.keras` model, build its model card (with
    the `evaluation` report, default eval/report.json beside the model) and export it (with
    TPN-ERM's head when `with_teacher`); returns the version directory written.

    `tflite`: also write the TFLite model of `serving_default` into the version, before it
    appears (`vtcaps_tf.export.tflite`, a mode of `tflite.MODES`); int8 calibrates on
    `calibration_clips` clips of the preprocessing output `calibration_data`.

    Raises UsageError when the model file is missing or not a model of `vtcaps train`, the
    evaluation report is unreadable, the version exists, or the TFLite options do not go together
    (checked before the model loads)."""
    from vtcaps_tf.export.model_card import build_model_card
    from vtcaps_tf.models import load_trained_model

    after_save = tflite_hook(tflite, calibration_data, calibration_clips, with_teacher)
    model = load_trained_model(model_path)
    card = build_model_card(model, model_path, evaluation)
    return export_model(model, base_path, version, card, with_teacher, after_save)


def tflite_hook(mode: str | None, calibration_data: str | None = None,
                calibration_clips: int | None = None, with_teacher: bool = False):
    """The `after_save` hook writing the TFLite model in `mode` (None: no hook, and no
    calibration options allowed); UsageError for options that do not go together."""
    from vtcaps_tf.export import tflite

    if mode is None:
        if calibration_data or calibration_clips is not None:
            raise UsageError("calibration data and clips are for the TFLite int8 mode (--tflite int8)")
        return None
    if with_teacher:
        raise UsageError("the TFLite model serves 3D-CapsNet alone: export it without the teacher")
    if mode != "int8" and (calibration_data or calibration_clips is not None):
        raise UsageError(f"calibration data and clips are for the TFLite int8 mode, not {mode}")
    if calibration_clips is not None and calibration_clips < 1:
        raise UsageError(f"calibration clips must be at least 1, got {calibration_clips}")
    count = tflite.DEFAULT_CALIBRATION_CLIPS if calibration_clips is None else calibration_clips
    return tflite.tflite_writer(mode, calibration_data, count)
