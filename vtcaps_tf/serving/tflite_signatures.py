"""A version's signatures answered by its `model.tflite` (`vtcaps serve --prefer_tflite_model`).

As TF Serving's `--prefer_tflite_model`: a version folder holding `model.tflite` (written by
`vtcaps export --tflite`, `vtcaps_tf.export.tflite`) is run by the TFLite interpreter rather than
TensorFlow; a version without one is served from its SavedModel. Here:

- `serving_default` runs the interpreters of a `TFLiteModel` (`num_tflite_pools` x
  `num_tflite_interpreters_per_pool` of them, shared by all requests);
- `serve_examples` (serialized SequenceExamples) is no TFLite builtin: each example is decoded in
  Python by the input contract the training reader uses (`InputContract.parse_example`, the
  short clip only, as a teacher-free export decodes it) and the decoded clips go to the same
  interpreters.

The SignatureDefs (`/metadata`, GetModelMetadata) stay the SavedModel's: the TFLite model takes
the same inputs and gives the same outputs. A signature the TFLite model cannot answer (any
other than these two) is served from the SavedModel.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from vtcaps_tf.export.tflite_runtime import TFLITE_FILE
from vtcaps_tf.serving.errors import invalid

SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "serve_examples"


@dataclasses.dataclass(frozen=True)
class TFLiteOptions:
    """TF Serving's TFLite flags: whether a version's `model.tflite` is preferred to its
    SavedModel, and how many interpreters run its requests (pools x interpreters per pool)."""

    prefer: bool = False
    pools: int = 1
    interpreters_per_pool: int = 1

    def __post_init__(self):
        if self.pools < 1 or self.interpreters_per_pool < 1:
            raise ValueError(f"TFLite pools and interpreters per pool must be at least 1, got "
                             f"{self.pools} and {self.interpreters_per_pool}")

    @property
    def interpreters(self) -> int:
        return self.pools * self.interpreters_per_pool


def has_tflite(path: str) -> bool:
    return os.path.isfile(os.path.join(path, TFLITE_FILE))


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_matches(name, model, signature_def, inputs) -> None:
    """Raise ValueError when the SignatureDef promises inputs or outputs the TFLite model lacks."""
    if set(signature_def.inputs) != set(inputs):
        raise ValueError(f"{TFLITE_FILE} takes {sorted(inputs)}, signature {name!r} of its "
                         f"SavedModel takes {sorted(signature_def.inputs)}")
    answered = set(model.info.get("outputs", ())) | {"classes"}
    missing = sorted(set(signature_def.outputs) - answered)
    if missing:
        raise ValueError(f"{TFLITE_FILE} does not give the outputs {missing} of its SavedModel")


def tflite_signatures(model, signature_defs, signature_class) -> dict:
    """{name: Signature} of the signatures `model` (a `TFLiteModel`) answers, built with
    `signature_class` (`servables.Signature`) over the SavedModel's `signature_defs`."""
    out = {}
    if SIGNATURE in signature_defs:
        _check_matches(SIGNATURE, model, signature_defs[SIGNATURE], model.inputs)
        out[SIGNATURE] = signature_class(SIGNATURE, signature_defs[SIGNATURE], TFLiteCall(model))
    if EXAMPLES_SIGNATURE in signature_defs and set(signature_defs[EXAMPLES_SIGNATURE].inputs) == {"examples"}:
        _check_matches(EXAMPLES_SIGNATURE, model, signature_defs[EXAMPLES_SIGNATURE], {"examples"})
        out[EXAMPLES_SIGNATURE] = signature_class(EXAMPLES_SIGNATURE, signature_defs[EXAMPLES_SIGNATURE],
                                                  ExamplesCall(model))
    return out


class TFLiteCall:
    """`serving_default` by the interpreters: numpy inputs -> numpy outputs (a model that refuses
    the inputs is an invalid argument)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self.model.predict(inputs)
        except ValueError as err:
            raise invalid(f"the model rejected the inputs: {_first_line(err)}") from None


class ExamplesCall(TFLiteCall):
    """`serve_examples` by the interpreters: each serialized SequenceExample decoded by the input
    contract (N and S read from the TFLite model's `frames`), then the clips in one call."""

    def __init__(self, model):
        from vtcaps_tf.data.contract import InputContract

        super().__init__(model)
        shape = model.inputs["frames"][0]  # (None, N, S, S, 3)
        # Without the teacher only the short clip is decoded, so the long window is N too.
        self.contract = InputContract(int(shape[1]), int(shape[1]), int(shape[2]))

    def decode(self, example: bytes) -> dict[str, np.ndarray]:
        import tensorflow as tf

        try:
            inputs, _ = self.contract.parse_example(tf.constant(example, tf.string), with_teacher=False)
        except (tf.errors.OpError, ValueError) as err:
            raise invalid(f"cannot decode the example: {_first_line(getattr(err, 'message', err))}") from None
        return {k: v.numpy() for k, v in inputs.items()}

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        examples = np.asarray(inputs["examples"], dtype=object).reshape(-1)
        if examples.size == 0:
            raise invalid("no examples given")
        clips = [self.decode(e if isinstance(e, bytes) else str(e).encode()) for e in examples]
        return super().__call__({k: np.stack([c[k] for c in clips]) for k in clips[0]})
