"""TF Serving's test model, built here: a TF1 graph computing y = a*x + b with a = 0.5, b = 2.

As `saved_model_half_plus_two.py` in tensorflow/serving describes it: a placeholder `tf_example`
(serialized tf.Example, no declared shape) parsed for the float features `x` ([1]) and `x2` ([1],
default 0); `x` [-1,1] -> `y = 0.5 x + 2`, `y2 = 0.5 x + 3`, `x2` -> `y3 = 0.5 x2 + 3`; signatures
`serving_default` (predict, x -> y), `classify_x_to_y` (scores = y), `regress_x_to_y`,
`regress_x_to_y2` (over the examples) and `regress_x2_to_y3` (over x2 directly). Written to a
zero-padded version folder `00000123`, as in TF Serving's test data.
"""

from __future__ import annotations

import os

VERSION_FOLDER = "00000123"
A, B, C = 0.5, 2.0, 3.0


def write_half_plus_two(base_path: str, version_folder: str = VERSION_FOLDER, b: float = B) -> str:
    """Write the SavedModel under base_path/version_folder; returns that folder."""
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = os.path.join(base_path, version_folder)
    builder = v1.saved_model.Builder(export_dir)
    with tf.Graph().as_default(), v1.Session() as sess:
        a = v1.Variable(A, name="a")
        b_var = v1.Variable(b, name="b")
        c = v1.Variable(C, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        features = v1.io.parse_example(serialized, {
            "x": v1.io.FixedLenFeature([1], tf.float32),
            "x2": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        for key in ("x", "x2"):  # [-1,1] as TF1's parse_example declared them (TF Serving's metadata)
            features[key].set_shape([None, 1])
        x = tf.identity(features["x"], name="x")
        y = tf.identity(a * x + b_var, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        a2 = v1.Variable(A, name="a2")
        c2 = v1.Variable(C, name="c2")
        y3 = tf.identity(a2 * x2 + c2, name="y3")

        info = v1.saved_model.utils.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def
        classify, regress, predict = ("tensorflow/serving/classify", "tensorflow/serving/regress",
                                      "tensorflow/serving/predict")
        signatures = {
            "serving_default": build({"x": info(x)}, {"y": info(y)}, predict),
            "classify_x_to_y": build({"inputs": info(serialized)}, {"scores": info(y)}, classify),
            "regress_x_to_y": build({"inputs": info(serialized)}, {"outputs": info(y)}, regress),
            "regress_x_to_y2": build({"inputs": info(serialized)}, {"outputs": info(y2)}, regress),
            "regress_x2_to_y3": build({"inputs": info(x2)}, {"outputs": info(y3)}, regress),
        }
        sess.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
    builder.save()
    return export_dir


def expected(x):
    """y = 0.5 x + 2, worked by hand (the model's formula, not the model)."""
    return A * x + B
