"""The one test helper every custom Keras layer passes (after KerasHub's `run_layer_test`).

It checks, for a layer class and its constructor arguments:
  1. config round-trip: every constructor argument is in `get_config()`, and `from_config` rebuilds
     a layer with the same config;
  2. a symbolic call on `keras.Input`s and an eager call on real data, with the expected shapes;
  3. one `fit` step of a model around the layer: finite loss, trainable weights move;
  4. `.keras` save and reload: the reloaded model gives the same outputs;
  5. under the `mixed_float16` policy (set, then restored): every floating output has the layer's
     compute dtype (float16, or float32 where the layer declares a float32 policy, as capsule
     routing may), is finite, and is close to the float32 layer's output with the same weights
     within a float16 tolerance.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np


def _as_inputs(data):
    """keras.Input structure matching the (possibly nested) example data, batch axis free."""
    return keras.tree.map_structure(
        lambda x: keras.Input(shape=tuple(np.shape(x)[1:]), dtype=keras.backend.standardize_dtype(
            getattr(x, "dtype", "float32"))), data)


def _flat_expected(expected):
    """A shape (tuple of ints) or a structure of shapes -> list of shapes in keras.tree order."""
    if isinstance(expected, (tuple, list)) and all(isinstance(d, int) for d in expected):
        return [tuple(expected)]
    if isinstance(expected, dict):
        return [tuple(expected[k]) for k in sorted(expected)]
    return [tuple(s) for s in expected]


# float16 keeps 11 significant bits (relative step ~1e-3); a layer's few roundings of inputs,
# weights and partial sums stay within a few percent of the output's scale.
MIXED_RTOL = 2e-2


def run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape=None,
                   run_training=True, expect_trainable_weights=None, call_kwargs=None,
                   atol=1e-6, mixed_precision=True, mixed_rtol=MIXED_RTOL):
    """Run the five checks; returns the eager output for further, layer-specific assertions.

    `input_data` is an array, a list or a dict of arrays (batch first). `expected_output_shape` is
    the full shape (with batch) or a matching structure of shapes. `call_kwargs` are passed to
    every call (e.g. `training`). `mixed_rtol` scales the float16 tolerance of check 5: an output
    may differ from the float32 one by `mixed_rtol * (1 + max |float32 output|)`.
    """
    call_kwargs = dict(call_kwargs or {})

    # 1. Config round-trip.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"{layer_cls.__name__}.get_config() lacks constructor argument {key!r}"
    rebuilt = layer_cls.from_config(config)
    assert rebuilt.get_config() == config, "from_config(get_config()) changed the config"

    # 2. Symbolic call, then eager call.
    sym_inputs = _as_inputs(input_data)
    sym_out = layer(sym_inputs, **call_kwargs)
    eager_layer = layer_cls(**init_kwargs)
    eager_out = eager_layer(input_data, **call_kwargs)
    if expected_output_shape is not None:
        want = _flat_expected(expected_output_shape)
        got = [tuple(t.shape) for t in keras.tree.flatten(eager_out)]
        assert got == want, f"eager output shapes {got} != {want}"
        sym = [tuple(t.shape) for t in keras.tree.flatten(sym_out)]
        assert [s[1:] for s in sym] == [w[1:] for w in want], \
            f"symbolic output shapes {sym} != {want} (batch aside)"
    for t in keras.tree.flatten(eager_out):
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(t))), "eager output is not finite"

    # A model around a fresh layer, used by 3. and 4.
    model_inputs = _as_inputs(input_data)
    model = keras.Model(model_inputs, layer_cls(**init_kwargs)(model_inputs, **call_kwargs))

    # 3. One fit step.
    if run_training:
        has_weights = bool(model.trainable_weights)
        if expect_trainable_weights is not None:
            assert has_weights == expect_trainable_weights, "unexpected trainable-weight presence"
        outputs = model(input_data)
        targets = keras.tree.map_structure(
            lambda t: np.zeros(tuple(t.shape), dtype="float32"), outputs)
        loss = keras.tree.map_structure(lambda _: "mse", outputs)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, jit_compile=False)
        before = [np.array(w) for w in model.trainable_weights]
        history = model.fit(input_data, targets, epochs=1, batch_size=len(keras.tree.flatten(input_data)[0]),
                            verbose=0)
        assert np.isfinite(history.history["loss"][-1]), "fit produced a non-finite loss"
        if has_weights:
            after = [np.array(w) for w in model.trainable_weights]
            assert any(not np.array_equal(a, b) for a, b in zip(before, after)), \
                "one fit step moved no trainable weight"

    # 4. .keras save and reload.
    expected = keras.tree.map_structure(keras.ops.convert_to_numpy, model(input_data))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)
    got = keras.tree.map_structure(keras.ops.convert_to_numpy, reloaded(input_data))
    for a, b in zip(keras.tree.flatten(expected), keras.tree.flatten(got)):
        np.testing.assert_allclose(b, a, rtol=0, atol=atol, err_msg="reloaded model differs")

    # 5. Mixed precision.
    if mixed_precision:
        check_mixed_precision(layer_cls, init_kwargs, input_data, eager_layer, eager_out, call_kwargs,
                              mixed_rtol)
    return eager_out


def check_mixed_precision(layer_cls, init_kwargs, input_data, float32_layer, float32_out, call_kwargs,
                          rtol=MIXED_RTOL):
    """Check 5 of `run_layer_test`: the layer under `mixed_float16`, with `float32_layer`'s weights."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = layer_cls(**init_kwargs)
        layer(input_data, **call_kwargs)  # builds the weights (kept in float32 by the policy)
        layer.set_weights(float32_layer.get_weights())
        out = layer(input_data, **call_kwargs)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == previous.name, "the global dtype policy was not restored"
    compute = layer.dtype_policy.compute_dtype
    assert compute in ("float16", "float32"), f"{layer_cls.__name__} computes in {compute} under mixed_float16"
    # Dropout and other training-time randomness make two calls differ whatever the precision.
    stochastic = call_kwargs.get("training") is True
    for i, (got, ref) in enumerate(zip(keras.tree.flatten(out), keras.tree.flatten(float32_out))):
        dtype = keras.backend.standardize_dtype(got.dtype)
        if not dtype.startswith("float"):
            continue
        assert dtype == compute, (f"{layer_cls.__name__} output {i} is {dtype} under mixed_float16; "
                                  f"the layer's policy computes in {compute}")
        got = keras.ops.convert_to_numpy(got).astype("float32")
        assert np.all(np.isfinite(got)), f"{layer_cls.__name__} output {i} is not finite under mixed_float16"
        if not stochastic:
            ref = keras.ops.convert_to_numpy(ref).astype("float32")
            tol = rtol * (1.0 + float(np.max(np.abs(ref), initial=0.0)))
            np.testing.assert_allclose(got, ref, rtol=0, atol=tol,
                                       err_msg=f"{layer_cls.__name__} output {i}: mixed_float16 vs float32")
