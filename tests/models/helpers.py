"""Random inputs shaped for a model config (shared by the model, export and serving tests).

Built from the config's `InputContract`, so that they follow the model's inputs whatever they are:
uint8 inputs uniform in 0..255, float ones (the landmarks, in [0, 1] of the crop) uniform in
[0, 1)."""

import numpy as np

from vtcaps_tf.data.contract import InputContract


def random_inputs(config, batch, seed=0, with_teacher=True):
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in InputContract.from_config(config).shapes(batch, with_teacher).items():
        if dtype == "uint8":
            out[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            out[name] = rng.uniform(0, 1, shape).astype(dtype)
    return out
