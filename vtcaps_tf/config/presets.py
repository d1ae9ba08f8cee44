"""The one preset table (docs/design.md section 9): every size-dependent number of the model and its data."""

from __future__ import annotations

import dataclasses
import json

from vtcaps_tf.config.pyramid_options import FLOWS, FUSIONS, POOLS

AU_MAP_SIZE = 100  # side of the AU attention map (paper 3.1.2, EAC-Net's 100x100 grid)

RENAMED_FIELDS = {"beta": "matching_weight"}  # old name -> new name, read by from_dict


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything `build_model` needs. Frozen: derive variants with `dataclasses.replace`."""

    name: str
    clip_frames: int  # N: frames seen by 3D-CapsNet (paper Eq. 1)
    long_frames: int  # M: frames of TPN-ERM's window, centred on the clip
    image_size: int  # square face crop fed to the network
    depth: int = 18  # ResNet depth: 18/34 basic, 50 bottleneck
    width: float = 1.0  # channel multiplier of the backbone
    # Downsampling, each a (temporal, spatial) stride: the stem conv, the max-pool after it, and
    # the first block of stages 1-4. The paper's 224 -> 7x7 is (1,2), (1,2), (1,1)(2,2)(2,2)(2,2);
    # small inputs need less so that PrimaryCaps' 2x2 valid conv still sees at least 2x2.
    stem_strides: tuple[int, int] = (1, 2)
    pool_strides: tuple[int, int] = (1, 2)
    stage_strides: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (2, 2), (2, 2))
    # TPN-ERM reads every k-th frame of its M-frame window (frames 0, k, 2k, ...): the same span
    # at 1/k of its backbone's cost, TPN's own frame-interval sampling. 1: every frame.
    tpn_frame_stride: int = 1
    tpn_channels: int = 1024
    tpn_levels: tuple[int, ...] = (3, 4)  # backbone stages collected by the pyramid (2..4)
    tpn_alphas: tuple[int, ...] | None = None  # temporal rate per level; None -> all 1
    tpn_dropout: float = 0.5  # before the TPN head and its auxiliary heads
    flow: str = "adaptive"
    fusion: str = "fast"
    tpn_pool: str = "max"  # motion feature: each level max-pooled (paper) or averaged over (T, H, W)
    primary_channels: int = 512  # backbone output projected to this before PrimaryCaps
    primary_caps_types: int = 32
    primary_caps_dim: int = 8
    digit_caps_dim: int = 16
    routing_iterations: int = 3
    decoder_units: tuple[int, int] = (512, 1024)
    recon_size: int | None = None  # side of the reconstructed middle frame; None -> image_size
    num_classes: int = 7
    au_size: int = AU_MAP_SIZE
    use_au_attention: bool = True
    use_nonlocal: bool = True
    use_capsules: bool = True  # False: pooled backbone + softmax head (paper Table 6 baseline)
    use_tpn: bool = True  # False: CapsNet3D alone
    recon_weight: float = 6e-4  # paper Eq. 6
    aux_weight: float = 0.5  # lambda_i of paper Eq. 10
    # Weight of the feature-matching term (PrimaryCaps aux units -> TPN feature), a cosine distance
    # in [0, 2] (losses.feature_matching_loss); 0 turns the distillation off. Was named `beta`.
    matching_weight: float = 1.0

    def __post_init__(self):
        if self.flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {self.flow!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.tpn_pool not in POOLS:
            raise ValueError(f"tpn_pool must be one of {POOLS}, got {self.tpn_pool!r}")
        if self.depth not in (18, 34, 50):
            raise ValueError(f"depth must be 18, 34 or 50, got {self.depth}")
        if self.long_frames < self.clip_frames:
            raise ValueError("long_frames (TPN window) must be at least clip_frames")
        if self.tpn_frame_stride < 1 or self.long_frames % self.tpn_frame_stride:
            raise ValueError(f"tpn_frame_stride must be >= 1 and divide long_frames ({self.long_frames}), "
                             f"got {self.tpn_frame_stride}")
        if len(self.stage_strides) != 4 or any(len(s) != 2 for s in self.stage_strides):
            raise ValueError(f"stage_strides must be four (temporal, spatial) pairs, got {self.stage_strides}")
        if not self.tpn_levels or any(level not in (1, 2, 3, 4) for level in self.tpn_levels):
            raise ValueError(f"tpn_levels must name backbone stages 1..4, got {self.tpn_levels}")
        if self.tpn_alphas is not None and len(self.tpn_alphas) != len(self.tpn_levels):
            raise ValueError("tpn_alphas needs one temporal rate per tpn level")
        if self.matching_weight < 0:
            raise ValueError(f"matching_weight must be >= 0, got {self.matching_weight}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        side = self.feature_size()
        if self.use_capsules and side < 2:
            raise ValueError(f"image_size {self.image_size} with these strides leaves a {side}x{side} "
                             "map: PrimaryCaps' 2x2 valid conv needs at least 2x2; lower the strides")

    def feature_size(self) -> int:
        """Side of the last stage's feature map (the PrimaryCaps input) for this image size."""
        side = self.image_size
        for _, spatial in (self.stem_strides, self.pool_strides) + tuple(self.stage_strides):
            side = -(-side // spatial)  # "same" padding
        return side

    def tpn_frames(self) -> int:
        """Frames TPN-ERM's backbone sees: the long window read at `tpn_frame_stride`."""
        return self.long_frames // self.tpn_frame_stride

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists); `ModelConfig.from_dict` inverts it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Inverse of `to_dict`; unknown keys are an error, lists become the tuples fields hold."""
        fields = {f.name for f in dataclasses.fields(cls)}
        data = dict(data)
        for old, new in RENAMED_FIELDS.items():  # configs saved before a field was renamed
            if old in data:
                if new in data:
                    raise ValueError(f"ModelConfig: both {old!r} (old name) and {new!r} given")
                data[new] = data.pop(old)
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")

        def tuplify(value):
            return tuple(tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value

        return cls(**{k: tuplify(v) for k, v in data.items()})


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        name="tiny", clip_frames=8, long_frames=16, image_size=32, depth=18, width=0.125,
        tpn_channels=32, primary_channels=32, decoder_units=(64, 128),
        # 32 -> stem 32 -> pool 16 -> stages 16, 16, 8, 4: PrimaryCaps gets 4x4 (3x3x32 capsules).
        stem_strides=(1, 1), pool_strides=(1, 2), stage_strides=((1, 1), (1, 1), (2, 2), (2, 2)),
    ),
    "small": ModelConfig(
        name="small", clip_frames=16, long_frames=32, image_size=112, depth=18, width=1.0,
        tpn_channels=256, primary_channels=256, recon_size=56,
        # 112 -> 56 -> 28 -> 28, 14, 7, 4: PrimaryCaps gets 4x4.
    ),
    "paper": ModelConfig(
        name="paper", clip_frames=16, long_frames=32, image_size=224, depth=50, width=1.0,
        tpn_channels=1024, primary_channels=512, recon_size=56,
        # 224 -> 112 -> 56 -> 56, 28, 14, 7: PrimaryCaps gets the paper's 512 x 7 x 7.
    ),
}


# Three-level pyramids (backbone stages 2-4): with three levels the adaptive flow has its
# three-input node (P2_out fuses F2, P2_td and P1_out) and cross-node links (paper Fig 6, Eq. 17),
# which two levels lack.
PRESETS.update({f"{base}3": dataclasses.replace(PRESETS[base], name=f"{base}3", tpn_levels=(2, 3, 4))
                for base in ("tiny", "small")})


DEFAULT_PRESET = "small"  # of `vtcaps train`, `crossval`, `preprocess` and `pipeline run`


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str, **overrides) -> ModelConfig:
    """The named preset, with any field overridden (`get_preset("tiny", num_classes=3)`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
