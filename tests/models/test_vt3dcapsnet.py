"""The task model: outputs, the loss against numpy, switches, and .keras round trip."""

import os

import keras
import numpy as np
import pytest

from helpers import random_inputs
from vtcaps_tf.layers import AUAttention, NonLocalBlock
from vtcaps_tf.models import CapsNet3D, VT3DCapsNet, build_model, get_preset


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", class_names=list("abcdefg"))


@pytest.fixture(scope="module")
def tiny_caps():
    """3D-CapsNet alone, reconstructing a 16x16 middle frame."""
    return build_model("tiny", recon_size=16, use_tpn=False)


def _np_cosine_distance(a, b):
    """1 - cos(a, b) per row (the feature-matching term, paper's auxiliary units)."""
    return 1.0 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _np_softmax_ce(logits, labels):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def test_outputs_follow_the_contract(tiny):
    x = random_inputs(tiny.config, 3)
    out = {k: np.array(v) for k, v in tiny(x, training=False).items()}
    assert out["probabilities"].shape == out["capsule_lengths"].shape == out["tpn_probabilities"].shape == (3, 7)
    # Lengths are the norms of the class capsules; probabilities are the lengths over their sum
    # (float32 reductions summed in another order than numpy's: about 1e-5 apart).
    np.testing.assert_allclose(out["capsule_lengths"], np.linalg.norm(out["digit_caps"], axis=-1), rtol=1e-4)
    np.testing.assert_allclose(out["probabilities"],
                               out["capsule_lengths"] / out["capsule_lengths"].sum(-1, keepdims=True), rtol=1e-4)
    np.testing.assert_allclose(out["tpn_probabilities"].sum(-1), 1.0, rtol=1e-5)
    assert out["reconstruction"].shape == (3, 32, 32, 3)
    assert 0 <= out["reconstruction"].min() and out["reconstruction"].max() <= 1
    assert out["motion_feature"].shape == out["motion_prediction"].shape == (3, 2 * 32)
    assert out["tpn_aux_logits"].shape == (3, 1, 7)
    assert tiny.class_names == list("abcdefg") and tiny.config.num_classes == 7


def test_loss_matches_numpy(tiny):
    x = random_inputs(tiny.config, 4, seed=1)
    y = np.array([0, 3, 6, 2])
    pred = tiny(x, training=False)
    for tracker in tiny.loss_trackers.values():
        tracker.reset_state()
    got = float(tiny.compute_loss(x, y, pred, training=False))

    p = {k: np.array(v, np.float64) for k, v in pred.items()}
    t = np.eye(7)[y]
    v = p["capsule_lengths"]
    margin = (t * np.maximum(0, 0.9 - v) ** 2 + 0.5 * (1 - t) * np.maximum(0, v - 0.1) ** 2).sum(-1)
    target = x["frames"][:, 4].astype(np.float64) / 255  # middle frame of the 8-frame clip
    recon = ((p["reconstruction"] - target) ** 2).reshape(4, -1).sum(-1)
    tpn = _np_softmax_ce(p["tpn_logits"], y)
    aux = _np_softmax_ce(p["tpn_aux_logits"][:, 0], y)
    mp, mf = p["motion_prediction"], p["motion_feature"]
    match = 1 - (mp * mf).sum(-1) / np.linalg.norm(mp, axis=-1) / np.linalg.norm(mf, axis=-1)  # cosine
    want = np.mean(margin + 6e-4 * recon + tpn + 0.5 * aux + 1.0 * match)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    logged = {k: float(m.result()) for k, m in tiny.loss_trackers.items()}
    np.testing.assert_allclose(
        [logged[k] for k in ("margin_loss", "reconstruction_loss", "tpn_loss", "aux_loss", "matching_loss")],
        [margin.mean(), recon.mean(), tpn.mean(), aux.mean(), match.mean()], rtol=1e-5)


def test_training_decoder_is_masked_by_the_label(tiny):
    x = random_inputs(tiny.config, 2, seed=2)
    pred = tiny(x, training=False)
    longest = np.argmax(np.array(pred["capsule_lengths"]), -1)
    other = (longest + 1) % 7

    def recon_loss(labels, training):
        tiny.loss_trackers["reconstruction_loss"].reset_state()
        tiny.compute_loss(x, labels, pred, training=training)
        return float(tiny.loss_trackers["reconstruction_loss"].result())

    # Masking by the true label equals masking by the longest capsule exactly when they agree.
    np.testing.assert_allclose(recon_loss(longest, True), recon_loss(longest, False), rtol=1e-6)
    assert abs(recon_loss(other, True) - recon_loss(other, False)) > 1e-4


def test_reconstruction_target_is_the_resized_middle_frame(tiny_caps):
    model = tiny_caps
    frames = random_inputs(model.config, 2, seed=3)["frames"]
    got = np.array(model.reconstruction_target(frames))
    middle = frames[:, 4].astype(np.float64) / 255
    np.testing.assert_allclose(got, middle.reshape(2, 16, 2, 16, 2, 3).mean(axis=(2, 4)), rtol=1e-5)
    assert tuple(model.decoder.target_shape) == (16, 16, 3)


def _check_au_map_use(model, use_au):
    # The AU map is drawn from the landmarks: moving them changes the output iff attention is on.
    x = random_inputs(model.config, 2, seed=4)
    x2 = dict(x, landmarks=np.zeros_like(x["landmarks"]))
    a, b = (np.array(model(v, training=False)["capsule_lengths"]) for v in (x, x2))
    assert (np.abs(a - b).max() > 1e-6) == use_au
    names = [type(layer).__name__ for layer in model.backbone.layers]
    assert ("AUAttention" in names) == use_au
    assert (model.au_render is not None) == use_au


def test_au_map_reaches_the_output(tiny_caps):
    _check_au_map_use(tiny_caps, True)


@pytest.mark.slow
def test_au_map_is_ignored_without_attention():
    _check_au_map_use(build_model("tiny", use_au_attention=False, use_tpn=False), False)


@pytest.mark.slow
@pytest.mark.parametrize("switch", ["use_nonlocal", "use_capsules", "use_tpn"])
def test_ablation_switches(switch):
    model = build_model("tiny", **{switch: False})
    x = random_inputs(model.config, 2, seed=5)
    out = model(x, training=False)
    layer_types = {type(layer) for layer in model.backbone.layers}
    assert (NonLocalBlock in layer_types) == model.config.use_nonlocal
    assert ("capsule_lengths" in out) == model.config.use_capsules
    assert ("logits" in out) == (not model.config.use_capsules)
    assert ("tpn_probabilities" in out) == model.config.use_tpn
    assert isinstance(model, CapsNet3D) == (not model.config.use_tpn)
    np.testing.assert_allclose(np.array(out["probabilities"]).sum(-1), 1.0, rtol=1e-5)
    loss = float(model.compute_loss(x, np.array([1, 2]), out, training=False))
    assert np.isfinite(loss) and loss > 0
    if switch == "use_capsules":
        np.testing.assert_allclose(loss, np.mean(
            _np_softmax_ce(np.array(out["logits"], np.float64), np.array([1, 2]))
            + _np_softmax_ce(np.array(out["tpn_logits"], np.float64), np.array([1, 2]))
            + 0.5 * _np_softmax_ce(np.array(out["tpn_aux_logits"][:, 0], np.float64), np.array([1, 2]))
            + _np_cosine_distance(np.array(out["motion_prediction"], np.float64),
                                  np.array(out["motion_feature"], np.float64))),
            rtol=1e-5)


def test_capsnet3d_accepts_and_ignores_long_frames(tiny_caps):
    model = tiny_caps
    assert isinstance(model, CapsNet3D)
    x = random_inputs(model.config, 1, seed=6)
    a = np.array(model(x, training=False)["probabilities"])
    x["long_frames"] = np.zeros_like(x["long_frames"])
    np.testing.assert_array_equal(a, np.array(model(x, training=False)["probabilities"]))
    del x["long_frames"]
    np.testing.assert_array_equal(a, np.array(model(x, training=False)["probabilities"]))


def test_keras_round_trip_reproduces_outputs_exactly(tiny, tmp_path):
    x = random_inputs(tiny.config, 2, seed=7)
    before = {k: np.array(v) for k, v in tiny(x, training=False).items()}
    path = os.path.join(tmp_path, "tiny.keras")
    tiny.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, VT3DCapsNet)
    assert loaded.config == tiny.config and loaded.class_names == tiny.class_names
    after = {k: np.array(v) for k, v in loaded(x, training=False).items()}
    assert sorted(after) == sorted(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_build_model_arguments():
    model = build_model(get_preset("tiny"), class_names=["neg", "pos"], flow="cascade", use_tpn=False)
    assert model.config.num_classes == 2 and model.config.flow == "cascade"
    assert isinstance(model, CapsNet3D) and model.class_names == ["neg", "pos"]
    with pytest.raises(ValueError, match="class names"):
        build_model("tiny", class_names=["a", "b"], num_classes=3)
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("huge")


def test_bad_inputs_are_rejected(tiny):
    x = random_inputs(tiny.config, 1)
    with pytest.raises(KeyError, match="landmarks"):
        tiny({"frames": x["frames"], "long_frames": x["long_frames"]})
    with pytest.raises(ValueError, match="landmarks"):
        tiny(dict(x, landmarks=x["landmarks"][:, :, :5]))
    with pytest.raises(ValueError, match="frames"):
        tiny(dict(x, frames=x["frames"][:, :4]))


def test_the_rendered_au_map_is_the_numpy_map_of_the_landmarks(tiny_caps):
    from vtcaps_tf.face.au import au_attention_map

    lm = random_inputs(tiny_caps.config, 1, seed=8)["landmarks"]
    size = tiny_caps.config.au_size
    got = np.array(tiny_caps.au_render(lm))[0]
    np.testing.assert_array_equal(got, np.stack([au_attention_map(x * size, size) for x in lm[0]]))


def test_serving_outputs_skip_the_teacher_and_match_the_full_model(tiny):
    x = random_inputs(tiny.config, 2, seed=9)
    full = tiny(x, training=False)
    student = tiny.serving_outputs({k: x[k] for k in ("frames", "landmarks")})  # no long_frames
    assert sorted(student) == ["capsule_lengths", "probabilities"]
    for key in student:
        np.testing.assert_allclose(np.array(student[key]), np.array(full[key]), atol=1e-6)
    teacher = tiny.serving_outputs(x, with_teacher=True)
    np.testing.assert_allclose(np.array(teacher["tpn_probabilities"]), np.array(full["tpn_probabilities"]),
                               atol=1e-6)
    with pytest.raises(KeyError, match="long_frames"):
        tiny.serving_outputs({k: x[k] for k in ("frames", "landmarks")}, with_teacher=True)


def test_a_teacher_frame_stride_reads_every_kth_frame_of_the_window():
    # The strided teacher on a 16-frame window computes what a teacher built for 8 frames computes
    # on frames 0, 2, ..., 14 of it, with the same weights (none depends on the frame count).
    strided = build_model("tiny", num_classes=3, tpn_frame_stride=2)
    plain = build_model("tiny", num_classes=3, long_frames=8)
    assert strided.tpn_backbone.inputs[0].shape[1] == 8
    plain.set_weights(strided.get_weights())
    x = random_inputs(strided.config, 2, seed=10)
    got = strided(x, training=False)
    want = plain(dict(x, long_frames=x["long_frames"][:, ::2]), training=False)
    for key in ("tpn_probabilities", "motion_feature", "probabilities"):
        np.testing.assert_allclose(np.array(got[key]), np.array(want[key]), atol=1e-6, err_msg=key)
    # The frames it skips change nothing.
    odd = x["long_frames"].copy()
    odd[:, 1::2] = 255 - odd[:, 1::2]
    np.testing.assert_array_equal(np.array(strided(dict(x, long_frames=odd), training=False)["motion_feature"]),
                                  np.array(got["motion_feature"]))


@pytest.mark.slow
def test_au_size_48_trains_a_step_and_exports(tmp_path):
    import tensorflow as tf

    from vtcaps_tf.export.saved_model import export_model
    from vtcaps_tf.face.au import au_attention_map

    model = build_model("tiny", class_names=["a", "b", "c"], au_size=48)
    assert model.au_render.size == 48
    x = random_inputs(model.config, 2, seed=10)
    np.testing.assert_array_equal(np.array(model.au_render(x["landmarks"]))[0, 0],
                                  au_attention_map(x["landmarks"][0, 0] * 48, 48))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [np.array(v) for v in model.trainable_variables]
    logs = model.train_on_batch(x, np.array([0, 2]), return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(np.abs(np.array(v) - b).max() > 0 for v, b in zip(model.trainable_variables, before))
    path = export_model(model, str(tmp_path / "export"))
    sig = tf.saved_model.load(path).signatures["serving_default"]
    got = sig(frames=tf.constant(x["frames"]), landmarks=tf.constant(x["landmarks"]))
    np.testing.assert_allclose(got["probabilities"].numpy(),
                               np.array(model(x, training=False)["probabilities"]), atol=1e-5)
