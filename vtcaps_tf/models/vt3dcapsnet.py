"""VT3DCapsNet (3D-CapsNet + TPN-ERM, paper Fig 1) and CapsNet3D (3D-CapsNet alone, Fig 2).

Inputs (a dict, shapes from `vtcaps_tf.data.contract.InputContract`): `frames` uint8 [B,N,S,S,3],
`landmarks` float32 [B,N,68,2] (x, y in [0, 1] of the crop), `long_frames` uint8 [B,M,S,S,3]
(accepted and ignored without TPN). Pixel scaling happens inside, and so does the AU attention
map: `AUMapRender` draws it from the landmarks at `config.au_size`.

3D-CapsNet: backbone (AU attention in stage 1, non-local after stage 4) -> 1x1x1 projection to
`primary_channels` -> mean over time -> PrimaryCaps -> DigitCaps; probabilities are the capsule
lengths divided by their sum. The decoder rebuilds the clip's middle frame (resized to
`recon_size`) from the capsules masked by the true label (training, in `compute_loss`) or by the
longest capsule (the `reconstruction` output).

TPN-ERM: its own backbone (same architecture, no AU attention) on the long clip (every
`tpn_frame_stride`-th frame of it), the stages of `tpn_levels` into `TemporalPyramid`. Auxiliary
units (one Dense) on the flattened PrimaryCaps regress the pyramid's motion feature, which is
gradient-stopped as a target.

`compute_loss` adds margin + recon_weight * reconstruction + TPN CE + aux_weight * aux CEs
+ matching_weight * feature matching (a cosine distance), so plain `compile(optimizer)` + `fit` trains it, on any
`tf.distribute` strategy; every term is logged.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf
from keras import ops

from vtcaps_tf.models import losses
from vtcaps_tf.data.contract import InputContract
from vtcaps_tf.layers.au_attention import area_resize_matrix
from vtcaps_tf.layers.au_render import AUMapRender
from vtcaps_tf.layers.capsules import DigitCaps, PrimaryCaps, ReconstructionDecoder, capsule_length, capsule_mask
from vtcaps_tf.layers.temporal_pyramid import TemporalPyramid
from vtcaps_tf.models.backbone import build_backbone, stage_channels
from vtcaps_tf.config.presets import ModelConfig, get_preset
from vtcaps_tf.errors import InputNotFoundError, UsageError


def _as_config(config) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, str):
        return get_preset(config)
    if isinstance(config, dict):
        return ModelConfig.from_dict(config)
    raise TypeError(f"config must be a ModelConfig, a preset name or a dict, got {type(config).__name__}")


def _scale_pixels(frames):
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return ops.cast(frames, "float32") / 127.5 - 1.0


@keras.saving.register_keras_serializable(package="vtcaps")
class VT3DCapsNet(keras.Model):
    """The task model. `config`: a ModelConfig (or preset name, or its `to_dict()`);
    `class_names`: label names, default `class_0`.. (kept in the config, so in `.keras` files).

    Outputs of `model(inputs)`: `probabilities` [B,C], `capsule_lengths` [B,C] (with capsules),
    `tpn_probabilities` [B,C] (with TPN), and the tensors the loss uses: `digit_caps`,
    `reconstruction`, `logits` (no capsules), `tpn_logits`, `tpn_aux_logits` [B,M-1,C],
    `motion_feature`, `motion_prediction`.
    """

    def __init__(self, config="tiny", class_names=None, **kwargs):
        config = _as_config(config)
        kwargs.setdefault("name", "vt3dcapsnet" if config.use_tpn else "capsnet3d")
        super().__init__(**kwargs)
        if class_names is None:
            class_names = [f"class_{i}" for i in range(config.num_classes)]
        class_names = [str(c) for c in class_names]
        if len(class_names) != config.num_classes:
            raise ValueError(f"{len(class_names)} class names for num_classes={config.num_classes}")
        self.config = config
        self.class_names = class_names

        c = config
        self.contract = InputContract.from_config(c)
        self.au_render = AUMapRender(c.au_size, name="au_render") if c.use_au_attention else None
        self.backbone = build_backbone(c, c.clip_frames, name="backbone")
        top_channels = stage_channels(c.depth, c.width)[3]
        self.projection = None
        if top_channels != c.primary_channels:
            self.projection = keras.layers.Conv3D(c.primary_channels, 1, use_bias=False,
                                                  kernel_initializer="he_normal", name="projection")
            self.projection_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                                                 name="projection_bn")
        if c.use_capsules:
            self.primary_caps = PrimaryCaps(c.primary_caps_types, c.primary_caps_dim, name="primary_caps")
            self.digit_caps = DigitCaps(c.num_classes, c.digit_caps_dim, c.routing_iterations,
                                        name="digit_caps")
            self.decoder = ReconstructionDecoder((self.recon_size, self.recon_size, 3),
                                                 c.decoder_units, name="decoder")
        else:
            self.head = keras.layers.Dense(c.num_classes, name="head")
        if c.use_tpn:
            if len(c.tpn_levels) < 2:
                raise ValueError("TPN-ERM needs at least two tpn_levels")
            self.tpn_backbone = build_backbone(c, c.tpn_frames(), use_au_attention=False,
                                               name="tpn_backbone")
            self.pyramid = TemporalPyramid(c.num_classes, c.tpn_channels, flow=c.flow, fusion=c.fusion,
                                           alphas=c.tpn_alphas, dropout=c.tpn_dropout, pool=c.tpn_pool,
                                           name="pyramid")
            self.motion_units = keras.layers.Dense(len(c.tpn_levels) * c.tpn_channels,
                                                   name="motion_units")

        # One tracker per loss term, so that fit logs each of them.
        names = (["margin_loss", "reconstruction_loss"] if c.use_capsules else ["classification_loss"])
        if c.use_tpn:
            names += ["tpn_loss", "aux_loss", "matching_loss"]
        self.loss_trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.tpn_accuracy_metric = (keras.metrics.SparseCategoricalAccuracy(name="tpn_accuracy")
                                    if c.use_tpn else None)
        # Build every weight now from the config's static shapes (a symbolic call: no compute).
        self(self.input_specs(symbolic=True))

    # Shapes ------------------------------------------------------------------------------------
    @property
    def recon_size(self) -> int:
        return self.config.recon_size or self.config.image_size

    def input_specs(self, batch_size=None, symbolic=False, with_teacher=True):
        """The named inputs (`InputContract.shapes`): `keras.KerasTensor`s (symbolic=True) or
        `tf.TensorSpec`s. with_teacher=False leaves out `long_frames`."""
        shapes = self.contract.shapes(batch_size, with_teacher)
        if symbolic:
            return {k: keras.KerasTensor(s, dtype=d, name=k) for k, (s, d) in shapes.items()}
        return self.contract.tensor_specs(batch_size, with_teacher)

    def build(self, input_shape=None):
        # Layers are built by the symbolic call in __init__; nothing else to create.
        pass

    # Forward -----------------------------------------------------------------------------------
    def _check_inputs(self, inputs, with_teacher=True):
        if not isinstance(inputs, dict):
            raise TypeError("inputs must be a dict with 'frames', 'landmarks' (and 'long_frames')")
        want = self.contract.shapes(with_teacher=with_teacher and self.config.use_tpn)
        missing = [k for k in want if k not in inputs]
        if missing:
            raise KeyError(f"inputs lack {missing}; got {sorted(inputs)}")
        for key, (shape, _) in want.items():
            got = tuple(inputs[key].shape[1:])
            if got != tuple(shape[1:]):
                raise ValueError(f"input {key!r} has shape [B, {', '.join(map(str, got))}], this "
                                 f"model ({self.config.name}) needs [B, {', '.join(map(str, shape[1:]))}]")

    def call(self, inputs, training=None):
        self._check_inputs(inputs)
        out, aux_source = self._capsnet(inputs, training)
        if self.config.use_tpn:
            out.update(self._teacher(inputs, aux_source, training))
        return out

    def serving_outputs(self, inputs, with_teacher=False):
        """Inference outputs only: `probabilities` and `capsule_lengths` (3D-CapsNet; the TPN-ERM
        backbone is not run), plus `tpn_probabilities` when with_teacher (needs `long_frames`)."""
        with_teacher = with_teacher and self.config.use_tpn
        self._check_inputs(inputs, with_teacher)
        out, aux_source = self._capsnet(inputs, False, reconstruct=False)
        keep = {k: out[k] for k in ("probabilities", "capsule_lengths") if k in out}
        if with_teacher:
            keep["tpn_probabilities"] = self._teacher(inputs, aux_source, False)["tpn_probabilities"]
        return keep

    def _capsnet(self, inputs, training, reconstruct=True):
        """3D-CapsNet: (outputs, the PrimaryCaps features the auxiliary units read)."""
        c = self.config
        stream = {"video": _scale_pixels(inputs["frames"])}
        if self.au_render is not None:
            stream["au_map"] = self.au_render(inputs["landmarks"])
        x = self.backbone(stream, training=training)["stage4"]
        if self.projection is not None:
            x = ops.relu(self.projection_bn(self.projection(x), training=training))
        x = ops.mean(x, axis=1)  # time pooled before PrimaryCaps: [B, H, W, C]

        out = {}
        if c.use_capsules:
            primary = self.primary_caps(x)
            digit = self.digit_caps(primary)
            lengths = ops.cast(capsule_length(digit), "float32")
            out["probabilities"] = lengths / ops.sum(lengths, axis=-1, keepdims=True)
            out["capsule_lengths"] = lengths
            out["digit_caps"] = digit
            if reconstruct:
                out["reconstruction"] = self.decoder([digit, capsule_mask(lengths)])
            aux_source = ops.reshape(primary, (-1, primary.shape[1] * primary.shape[2]))
        else:
            logits = ops.cast(self.head(ops.mean(x, axis=(1, 2))), "float32")
            out["probabilities"] = ops.softmax(logits, axis=-1)
            out["logits"] = logits
            aux_source = ops.reshape(x, (-1, x.shape[1] * x.shape[2] * x.shape[3]))
        return out, aux_source

    def _teacher(self, inputs, aux_source, training):
        """TPN-ERM on the long window, and the auxiliary units' prediction of its feature."""
        c = self.config
        window = inputs["long_frames"]
        if c.tpn_frame_stride > 1:
            window = window[:, ::c.tpn_frame_stride]
        levels = self.tpn_backbone({"video": _scale_pixels(window)}, training=training)
        tpn = self.pyramid([levels[f"stage{i}"] for i in c.tpn_levels], training=training)
        tpn_logits = ops.cast(tpn["logits"], "float32")
        return {
            "tpn_probabilities": ops.softmax(tpn_logits, axis=-1),
            "tpn_logits": tpn_logits,
            "tpn_aux_logits": ops.stack([ops.cast(a, "float32") for a in tpn["aux_logits"]], axis=1),
            "motion_feature": ops.cast(tpn["feature"], "float32"),
            "motion_prediction": ops.cast(self.motion_units(aux_source), "float32"),
        }

    # Loss and metrics ----------------------------------------------------------------------------
    def reconstruction_target(self, frames):
        """The clip's middle frame in [0, 1], area-resized to recon_size: [B, R, R, 3]."""
        c = self.config
        middle = ops.cast(frames[:, c.clip_frames // 2], "float32") / 255.0
        if self.recon_size != c.image_size:
            m = ops.convert_to_tensor(area_resize_matrix(c.image_size, self.recon_size))
            middle = ops.einsum("byxc,Yy,Xx->bYXc", middle, m, m)
        return middle

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y is None:
            raise ValueError("VT3DCapsNet needs integer labels to compute its loss")
        c = self.config
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        batch = ops.shape(labels)[0]
        weights = (ops.ones((batch,), "float32") if sample_weight is None
                   else ops.reshape(ops.cast(sample_weight, "float32"), (-1,)))

        terms = {}
        if c.use_capsules:
            onehot = ops.one_hot(labels, c.num_classes, dtype="float32")
            terms["margin_loss"] = losses.margin_loss(onehot, y_pred["capsule_lengths"])
            # Decoder masked by the true label in training, by the longest capsule otherwise.
            recon = (self.decoder([y_pred["digit_caps"], onehot]) if training
                     else y_pred["reconstruction"])
            terms["reconstruction_loss"] = losses.reconstruction_loss(
                self.reconstruction_target(x["frames"]), recon)
            weighted = {"margin_loss": 1.0, "reconstruction_loss": c.recon_weight}
        else:
            terms["classification_loss"] = ops.sparse_categorical_crossentropy(
                labels, y_pred["logits"], from_logits=True)
            weighted = {"classification_loss": 1.0}
        if c.use_tpn:
            terms["tpn_loss"] = losses.tpn_loss(labels, y_pred["tpn_logits"])
            aux = y_pred["tpn_aux_logits"]
            terms["aux_loss"] = sum(losses.tpn_loss(labels, aux[:, i]) for i in range(aux.shape[1]))
            terms["matching_loss"] = losses.feature_matching_loss(y_pred["motion_prediction"],
                                                                  y_pred["motion_feature"])
            weighted.update(tpn_loss=1.0, aux_loss=c.aux_weight, matching_loss=c.matching_weight)

        total = 0.0
        for name, per_sample in terms.items():
            value = ops.mean(per_sample * weights)  # Keras' sum-over-batch-size reduction
            self.loss_trackers[name].update_state(value, sample_weight=batch)
            total = total + weighted[name] * value
        for loss in self.losses:  # regularisers, if any
            total = total + ops.cast(loss, "float32")
        # Gradients are summed over replicas: scale this replica's mean by 1 / replicas.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return total / replicas if replicas > 1 else total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        self.accuracy_metric.update_state(labels, y_pred["probabilities"], sample_weight=sample_weight)
        if self.tpn_accuracy_metric is not None:
            self.tpn_accuracy_metric.update_state(labels, y_pred["tpn_probabilities"],
                                                  sample_weight=sample_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    # Serialisation -------------------------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "config": self.config.to_dict(),
                "class_names": list(self.class_names)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="vtcaps")
class CapsNet3D(VT3DCapsNet):
    """3D-CapsNet alone (no TPN-ERM): the paper's Fig 2 model, `use_tpn` forced off."""

    def __init__(self, config="tiny", class_names=None, **kwargs):
        super().__init__(dataclasses.replace(_as_config(config), use_tpn=False), class_names, **kwargs)


def build_model(config_or_preset_name="tiny", class_names=None, **overrides) -> VT3DCapsNet:
    """A VT3DCapsNet (CapsNet3D when use_tpn=False), not compiled.

    `build_model("tiny", class_names=[...], flow="cascade")`: a preset name or a ModelConfig, any
    ModelConfig field overridden; `num_classes` follows `class_names` unless given.
    """
    config = _as_config(config_or_preset_name)
    if class_names is not None and "num_classes" not in overrides:
        overrides["num_classes"] = len(class_names)
    config = dataclasses.replace(config, **overrides) if overrides else config
    cls = VT3DCapsNet if config.use_tpn else CapsNet3D
    return cls(config, class_names=class_names)


def load_trained_model(path: str) -> VT3DCapsNet:
    """The model a `vtcaps train` run saved (`RUN_DIR/model.keras`), uncompiled.

    Bad input, naming the file: InputNotFoundError (a FileNotFoundError) when there is no such
    file, UsageError (a ValueError) when it is not a `.keras` archive of a VT3DCapsNet.
    """
    if not os.path.isfile(path):
        raise InputNotFoundError(f"no model file {path!r}")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises ValueError, OSError or zipfile errors by file kind
        raise UsageError(f"cannot load {path!r} as a .keras model: {err}") from err
    if not isinstance(model, VT3DCapsNet):
        raise UsageError(f"{path!r} holds a {type(model).__name__}, not a model of `vtcaps train`")
    return model
