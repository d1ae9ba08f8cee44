"""The tempo task (pipeline/synth/tempo.py): its intensity curves against the constraints in its
docstring, checked frame by frame over many draws, and the statistics of benchmarks/ablation.py
against hand-worked cases."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vtcaps_pipeline.synth import tempo as st

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ablation_module():
    spec = importlib.util.spec_from_file_location("ablation", os.path.join(REPO, "benchmarks", "ablation.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layout_matches_the_tiny_preset():
    from vtcaps_tf.models import get_preset

    tiny = get_preset("tiny")
    assert (st.CLIP_FRAMES, st.LONG_FRAMES) == (tiny.clip_frames, tiny.long_frames)
    for short, long in st.clip_indices():
        assert len(short) == 8 and len(long) == 16
        # The long window is centred on the clip (4 frames each side), inside the video.
        assert long[0] == short[0] - 4 and long[-1] == short[-1] + 4
        assert long[0] >= 0 and long[-1] <= st.VIDEO_FRAMES - 1


@pytest.mark.parametrize("label", [0, 1])
def test_short_clips_are_inside_the_rise_and_only_windows_differ(label):
    rng = np.random.default_rng(label)
    for _ in range(300):
        clip = st.draw_tempo(label, rng)
        curve = st.intensity(clip)
        step = np.diff(curve)
        for short, long in st.clip_indices():
            # Every short clip: a steady rise at the clip's speed (7 equal steps), whatever the class.
            np.testing.assert_allclose(step[short[:-1]], clip.speed, rtol=1e-9)
            window_steps = step[long[:-1]]
            if st.CLASSES[label] == "short_rise":
                # Still (zero step) at both ends of every long window.
                assert window_steps[0] == 0 and window_steps[-1] == 0
            else:
                np.testing.assert_allclose(window_steps, clip.speed, rtol=1e-9)
        # The first clip starts at the drawn level: the same range for both classes.
        assert curve[st.CLIP_STARTS[0]] == pytest.approx(clip.start_intensity)
        assert st.SPEED[0] <= clip.speed <= st.SPEED[1]
        assert 0 <= curve.min() and curve.max() <= 1.25


def test_paired_bootstrap_and_correctness_hand_worked():
    ablation = _ablation_module()
    # Two videos of two clips each; labels 0 and 1.
    test = {"video": np.array([0, 0, 1, 1]), "labels": np.array([0, 0, 1, 1])}
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.45, 0.55]])
    clip, video = ablation.correctness(probs, test)
    # Video 0: clips right, wrong -> 0.5; mean prob (0.55, 0.45) -> right. Video 1: both right.
    np.testing.assert_allclose(clip, [0.5, 1.0])
    np.testing.assert_allclose(video, [1.0, 1.0])
    # A constant difference has a zero-width interval at that difference.
    out = ablation.paired_bootstrap(np.ones(50), np.full(50, 0.75))
    assert out == {"diff": 25.0, "ci95": [25.0, 25.0]}
    # Half the videos +1, half 0: mean 0.5, and the interval covers it without reaching 0 or 1.
    out = ablation.paired_bootstrap(np.r_[np.ones(200), np.zeros(200)], np.zeros(400))
    assert out["diff"] == 50.0 and 40 < out["ci95"][0] < 50 < out["ci95"][1] < 60


def test_logistic_regression_separates_a_separable_case():
    ablation = _ablation_module()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(float)
    p = ablation.logistic_regression(x[:100], y[:100], x[100:])
    assert np.mean((p > 0.5) == (y[100:] == 1)) > 0.9


@pytest.mark.slow
def test_generate_arrays_shapes_and_landmarks():
    data = st.generate_arrays(4, image_size=16, render_size=64, subjects=2, seed=1)
    assert data["frames"].shape == (4, st.VIDEO_FRAMES, 16, 16, 3) and data["frames"].dtype == np.uint8
    assert data["landmarks"].shape == (4, st.VIDEO_FRAMES, 68, 2)
    assert 0 < data["landmarks"].min() and data["landmarks"].max() < 1
    # Every subject shows both classes (identity must not predict the class).
    assert list(data["labels"]) == [0, 1, 0, 1] and list(data["subjects"]) == [0, 0, 1, 1]
    # The face moves: the expression rises in every video.
    assert np.abs(np.diff(data["landmarks"], axis=1)).max() > 1e-3


def test_long_clip_rows_see_the_long_window_in_the_same_order():
    ablation = _ablation_module()
    v, t = 3, st.VIDEO_FRAMES
    frames = np.arange(v * t, dtype=np.float32).reshape(v, t, 1, 1, 1) * np.ones((1, 1, 2, 2, 3))
    marks = np.arange(v * t, dtype=np.float32).reshape(v, t, 1, 1) * np.ones((1, 1, 68, 2))
    data = {"train_frames": frames, "train_landmarks": marks, "train_labels": np.array([0, 1, 0])}
    short, long = ablation.clips_of(data, "train"), ablation.clips_of(data, "train", long_clip=True)
    # Clip k of video i: frame value i * T + index. Clip 0 starts at 4 (window 0..15), clip 1 at 6 (2..17).
    for k, start in enumerate(st.CLIP_STARTS):
        for i in range(v):
            row = k * v + i
            assert list(short["frames"][row, :, 0, 0, 0]) == [i * t + start + j for j in range(8)]
            want_long = [i * t + start - 4 + j for j in range(16)]
            assert list(long["frames"][row, :, 0, 0, 0]) == want_long
            assert list(long["landmarks"][row, :, 0, 0]) == want_long
            assert list(long["long_frames"][row, :, 0, 0, 0]) == want_long
    for key in ("labels", "video"):
        np.testing.assert_array_equal(short[key], long[key])
    for name in ablation.LONG_CLIP_ROWS:
        assert ablation.ROWS[name]["clip_frames"] == st.LONG_FRAMES


def test_apex_gain_scales_the_expression_motion():
    from vtcaps_pipeline.synth import render as synth

    base = synth.prepare_face(synth.load_face_image(None), 64)
    marks = {g: st.generate_arrays(2, image_size=16, render_size=64, subjects=1, seed=3, base=base,
                                   apex_gain=g)["landmarks"] for g in (0.0, 1.0, 3.0)}
    # Same draws (seeded per video), so gain 0 is the face without its expression: the displacement
    # of every landmark from it is linear in the gain, and the frame-to-frame motion with it.
    move = {g: marks[g] - marks[0.0] for g in (1.0, 3.0)}
    assert np.abs(move[1.0]).max() > 1e-3
    np.testing.assert_allclose(move[3.0], 3 * move[1.0], atol=1e-5)
    np.testing.assert_allclose(np.diff(marks[3.0], axis=1), 3 * np.diff(marks[1.0], axis=1)
                               - 2 * np.diff(marks[0.0], axis=1), atol=1e-5)


def test_ablation_rows_take_the_run_settings_then_their_own_change():
    ablation = _ablation_module()
    assert ablation.row_overrides("reference", "mean", 16) == {"tpn_pool": "mean", "au_size": 16}
    assert ablation.row_overrides("tpn_pool_max", "mean", 16)["tpn_pool"] == "max"
    assert ablation.row_overrides("tpn_pool_mean", "max", 24) == {"tpn_pool": "mean", "au_size": 24}
    flow = ablation.row_overrides("flow_cascade", "mean", 16)
    assert flow == {"tpn_pool": "mean", "au_size": 16, "flow": "cascade"}


@pytest.mark.slow
def test_ablation_quick_run_prints_the_json_fields(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "ablation.py"), "--quick",
                          "--rows", "capsnet3d,tpn_pool_mean", "--work-dir", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=1800, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "ablation" and result["quick"] is True
    assert set(result["logistic_regression_accuracy"]) == {"long_window", "short_clip"}
    assert result["matmul_gflops"] > 0
    assert result["fusion_node_timing"]["fast_us"] > 0 and result["fusion_node_timing"]["softmax_us"] > 0
    rows = result["rows"]
    assert set(rows) == {"reference", "capsnet3d", "tpn_pool_mean"}
    assert result["tpn_pool"] == "max" and result["au_size"] == result["image_size"]
    assert rows["reference"]["overrides"]["tpn_pool"] == "max"
    assert rows["tpn_pool_mean"]["overrides"]["tpn_pool"] == "mean"
    lo, hi = rows["tpn_pool_mean"]["tpn_clip_diff"]["ci95"]  # TPN head vs the reference's
    assert lo <= rows["tpn_pool_mean"]["tpn_clip_diff"]["diff"] <= hi
    assert "tpn_clip_diff" not in rows["capsnet3d"]
    for name, row in rows.items():
        assert 0 <= row["clip_accuracy"] <= 1 and 0 <= row["video_accuracy"] <= 1
        assert row["ms_per_step"] > 0
        if name != "reference":
            for key in ("clip_diff", "video_diff"):
                lo, hi = row[key]["ci95"]
                assert lo <= row[key]["diff"] <= hi
    assert rows["capsnet3d"]["tpn_accuracy"] is None and rows["reference"]["tpn_accuracy"] is not None
