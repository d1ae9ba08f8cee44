"""Versioned SavedModel export for TensorFlow Serving (docs/design.md section 10).

`base_path/<version>/` holds a SavedModel with two signatures:
- `serving_default`: the model's named inputs `frames` uint8 [B,N,S,S,3], `au_map` float32
  [B,N,100,100], `long_frames` uint8 [B,M,S,S,3];
- `serve_examples`: `examples`, serialized SequenceExamples as the Beam job writes them, parsed and
  decoded inside the graph with the schema's own functions.
Both return `probabilities`, `capsule_lengths`, `classes` (string [B,C]: the label names, a constant
in the graph) and, when the model has a TPN stream, `tpn_probabilities`.

Versions are integers; an existing version is never overwritten. The SavedModel is written into a
hidden temporary directory beside the versions (TF Serving ignores names that are not integers) and
renamed into place in one step, so a polling server never sees half a model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import uuid

import tensorflow as tf

from vtcaps_tf.data import features

OUTPUT_NAMES = ("probabilities", "capsule_lengths", "tpn_probabilities")


def existing_versions(base_path: str) -> list[int]:
    """Integer version directories under base_path, ascending."""
    if not tf.io.gfile.isdir(base_path):
        return []
    return sorted(int(name.rstrip("/")) for name in tf.io.gfile.listdir(base_path)
                  if name.rstrip("/").isdigit())


def _model_dims(model):
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("the model has no `config` (ModelConfig): build it with vtcaps_tf.models.build_model")
    return config.clip_frames, config.long_frames, config.image_size


def serving_fns(model):
    """The two signature functions (tf.function with input signatures) for `model`."""
    n, m, s = _model_dims(model)
    class_names = [str(c) for c in getattr(model, "class_names", None) or []]
    if not class_names:
        raise ValueError("the model carries no class_names")
    au = features.AU_MAP_SIZE

    def _outputs(inputs):
        out = model(inputs, training=False)
        result = {k: tf.cast(out[k], tf.float32) for k in OUTPUT_NAMES if k in out}
        if "probabilities" not in result:
            raise ValueError("the model's outputs lack 'probabilities'")
        batch = tf.shape(result["probabilities"])[0]
        names = tf.constant(class_names, dtype=tf.string)
        result["classes"] = tf.tile(names[None, :], tf.stack([batch, 1]))
        return result

    @tf.function(input_signature=[
        tf.TensorSpec([None, n, s, s, 3], tf.uint8, name="frames"),
        tf.TensorSpec([None, n, au, au], tf.float32, name="au_map"),
        tf.TensorSpec([None, m, s, s, 3], tf.uint8, name="long_frames"),
    ])
    def serve(frames, au_map, long_frames):
        return _outputs({"frames": frames, "au_map": au_map, "long_frames": long_frames})

    spec = {
        "frames": tf.TensorSpec([n, s, s, 3], tf.uint8),
        "au_map": tf.TensorSpec([n, au, au], tf.float32),
        "long_frames": tf.TensorSpec([m, s, s, 3], tf.uint8),
    }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        def _one(serialized):
            context, sequence = features.parse_example(serialized)
            return features.decode_clip(context, sequence, n, m, s)

        inputs = tf.map_fn(_one, examples, fn_output_signature=spec)
        return _outputs(inputs)

    return serve, serve_examples


def save_serving_model(model, path: str, card: dict | None = None) -> str:
    """Write the SavedModel with both signatures at `path` (which must not exist), atomically:
    into a hidden sibling directory first, renamed into place once complete. The model card
    (`vtcaps_tf.model_card`; default: built from the model alone) goes to assets/model_card.json."""
    from vtcaps_tf.model_card import build_model_card, write_model_card

    path = os.path.abspath(path)
    if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)  # an empty directory prepared by the caller (a TFX Trainer does this)
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; versions are never overwritten (pick another --version)")
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    serve, serve_examples = serving_fns(model)
    module = tf.Module()
    module.model = model  # tracks the variables
    module.serve = serve
    module.serve_examples = serve_examples
    tmp = os.path.join(parent, f".tmp-{name}-{uuid.uuid4().hex[:8]}")
    try:
        tf.saved_model.save(module, tmp, signatures={
            "serving_default": serve.get_concrete_function(),
            "serve_examples": serve_examples.get_concrete_function(),
        })
        write_model_card(tmp, card if card is not None else build_model_card(model))
        # rename() of a directory is atomic, and fails if `path` appeared meanwhile with content.
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def export_model(model, base_path: str, version: int | None = None, card: dict | None = None) -> str:
    """Write `model` (and its model `card`) as `base_path/<version>/` and return that path.

    version=None takes one more than the highest existing version (1 for a new base path).
    Raises FileExistsError when the version exists already.
    """
    base_path = os.path.abspath(base_path)
    os.makedirs(base_path, exist_ok=True)
    if version is None:
        version = (existing_versions(base_path) or [0])[-1] + 1
    if int(version) < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    target = os.path.join(base_path, str(int(version)))
    if os.path.exists(target):
        raise FileExistsError(f"{target} exists; versions are never overwritten (pick another --version)")

    save_serving_model(model, target, card)
    return target


def export_trained(model_path: str, base_path: str, version: int | None = None,
                   evaluation: str | None = None) -> str:
    """`vtcaps export` as a function: load the trained `.keras` model, build its model card (with
    the `evaluation` report, default eval/report.json beside the model) and export it; returns
    the version directory written."""
    from vtcaps_tf.model_card import build_model_card
    from vtcaps_tf.models import load_trained_model

    model = load_trained_model(model_path)
    card = build_model_card(model, model_path, evaluation)
    return export_model(model, base_path, version, card)


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_tf import cli_parsers

    return cli_parsers.export_parser()  # defined without TensorFlow, for a fast `--help`


def cli_main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_tf.models import load_trained_model

    try:
        model = load_trained_model(args.model)
    except (OSError, ValueError) as err:
        print(f"vtcaps export: {err}", file=sys.stderr)
        return 2
    from vtcaps_tf.model_card import build_model_card, describe

    try:
        card = build_model_card(model, args.model, args.evaluation)
        path = export_model(model, args.base_path, args.version, card)
    except (FileExistsError, ValueError) as err:
        print(f"vtcaps export: {err}", file=sys.stderr)
        return 1
    print(f"model card: {describe(card)}", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
