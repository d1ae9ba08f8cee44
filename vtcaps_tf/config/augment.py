"""The training augmentations' settings (`vtcaps_tf.data.dataset.augment_clip` applies them).

Options of `vtcaps train` / `vtcaps crossval` and of the pipeline's `train` and `crossval` sections,
where `augment` is true (these defaults), false (`AugmentConfig.none()`) or a mapping of these
fields. Imports only the standard library.
"""

from __future__ import annotations

import dataclasses

from vtcaps_tf.config.options import option


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations. Each clip draws one set of parameters, shared by all its frames,
    its long window and (for the geometric ones) its landmarks, so they stay aligned."""

    crop_scale: float = option(0.85, help="random square crop of at least this fraction of the "
                                          "side, resized back (1: no crop)")
    flip: bool = option(True, help="horizontal flip with probability 1/2 (frames and landmarks together)")
    brightness: float = option(0.15, minimum=0.0,
                               help="max additive change, as a fraction of the 0..255 range")
    contrast: float = option(0.2, minimum=0.0, help="contrast factor drawn from [1 - c, 1 + c]")
    temporal_jitter: int = option(2, minimum=0, help="the clip's centre moves by up to this many frames")

    def __post_init__(self):
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.brightness < 0 or self.contrast < 0 or self.temporal_jitter < 0:
            raise ValueError("brightness, contrast and temporal_jitter must be >= 0")

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(crop_scale=1.0, flip=False, brightness=0.0, contrast=0.0, temporal_jitter=0)
