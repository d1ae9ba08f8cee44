"""The one preset table (DESIGN.md section 9): every size-dependent number of the model and its data."""

from __future__ import annotations

import dataclasses

FLOWS = ("isolation", "top_down", "bottom_up", "cascade", "parallel", "adaptive")
FUSIONS = ("fast", "softmax")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything `build_model` needs. Frozen: derive variants with `dataclasses.replace`."""

    name: str
    clip_frames: int  # N: frames seen by 3D-CapsNet (paper Eq. 1)
    long_frames: int  # M: frames seen by TPN-ERM, centred on the clip
    image_size: int  # square face crop fed to the network
    depth: int = 18  # ResNet depth: 18/34 basic, 50 bottleneck
    width: float = 1.0  # channel multiplier of the backbone
    tpn_channels: int = 1024
    tpn_levels: tuple[int, ...] = (3, 4)  # backbone stages collected by the pyramid (2..4)
    tpn_alphas: tuple[int, ...] | None = None  # temporal rate per level; None -> all 1
    flow: str = "adaptive"
    fusion: str = "fast"
    primary_channels: int = 512  # backbone output projected to this before PrimaryCaps
    primary_caps_types: int = 32
    primary_caps_dim: int = 8
    digit_caps_dim: int = 16
    routing_iterations: int = 3
    decoder_units: tuple[int, int] = (512, 1024)
    num_classes: int = 7
    au_size: int = 100
    use_au_attention: bool = True
    use_nonlocal: bool = True
    use_capsules: bool = True  # False: pooled backbone + softmax head (paper Table 6 baseline)
    use_tpn: bool = True  # False: CapsNet3D alone
    recon_weight: float = 6e-4  # paper Eq. 6
    aux_weight: float = 0.5  # lambda_i of paper Eq. 10
    beta: float = 1.0  # weight of the feature-matching loss (PrimaryCaps aux units -> TPN feature)

    def __post_init__(self):
        if self.flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {self.flow!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.depth not in (18, 34, 50):
            raise ValueError(f"depth must be 18, 34 or 50, got {self.depth}")
        if self.long_frames < self.clip_frames:
            raise ValueError("long_frames (TPN window) must be at least clip_frames")


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        name="tiny", clip_frames=8, long_frames=16, image_size=32, depth=18, width=0.125,
        tpn_channels=32, primary_channels=32, decoder_units=(64, 128),
    ),
    "small": ModelConfig(
        name="small", clip_frames=16, long_frames=32, image_size=112, depth=18, width=1.0,
        tpn_channels=256, primary_channels=256,
    ),
    "paper": ModelConfig(
        name="paper", clip_frames=16, long_frames=32, image_size=224, depth=50, width=1.0,
        tpn_channels=1024, primary_channels=512,
    ),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """The named preset, with any field overridden (`get_preset("tiny", num_classes=3)`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
