"""Random inputs shaped for a model config (shared by the model tests)."""

import numpy as np


def random_inputs(config, batch, seed=0):
    rng = np.random.default_rng(seed)
    s = config.image_size
    return {
        "frames": rng.integers(0, 256, (batch, config.clip_frames, s, s, 3), dtype=np.uint8),
        "au_map": rng.uniform(0, 1, (batch, config.clip_frames, config.au_size, config.au_size)).astype("float32"),
        "long_frames": rng.integers(0, 256, (batch, config.long_frames, s, s, 3), dtype=np.uint8),
    }
