"""Synthetic expression videos: warp maths, AU movements, MediaPipe on the output, manifest, determinism."""

import dataclasses
import json
import os

import numpy as np
import pytest

from vtcaps_pipeline.synth import render as synth
from vtcaps_pipeline.synth import au as synth_au
from vtcaps_pipeline.synth.warp import PiecewiseAffineField

SIZE = 128


def _read_video(path):
    import cv2

    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)


@pytest.fixture(scope="module")
def base():
    return synth.prepare_face(synth.load_face_image(), SIZE)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth"))
    config = synth.SynthConfig(output=out, per_class=2, subjects=2, seed=3, frames=20, size=SIZE)
    return config, synth.generate(config, progress=False)


# ---- pure maths -----------------------------------------------------------------------------------

def test_intensity_curve_hand_values():
    curve = synth.intensity_curve(10, onset=2, apex=6, amplitude=2.0)
    # smoothstep x^2 (3 - 2x): x = 0 up to the onset, x = 1/2 half way (t = 4), x = 1 from the apex.
    np.testing.assert_allclose(curve[:3], 0.0)
    np.testing.assert_allclose(curve[3], 2.0 * (0.25 ** 2) * (3 - 0.5))
    np.testing.assert_allclose(curve[4], 1.0)
    np.testing.assert_allclose(curve[6:], 2.0)
    assert np.all(np.diff(curve) >= 0)


def test_field_interpolates_nodes_and_fixes_border():
    rng = np.random.default_rng(0)
    pts = rng.integers(8, 32, size=(30, 2)).astype(np.float64)
    pts = np.unique(pts, axis=0)
    warp = PiecewiseAffineField(pts, 40, 40)
    disp = rng.normal(0, 2, size=pts.shape)
    field = warp.field(disp)
    xi, yi = pts[:, 0].astype(int), pts[:, 1].astype(int)
    np.testing.assert_allclose(field[yi, xi], disp, atol=1e-4)  # exact at the nodes
    # The frame's edge stays (nearly) still: nodes there are 2 px outside and fixed at zero.
    assert np.abs(field[0]).max() < np.abs(disp).max() * 0.5
    # Linear in the displacements, and every value lies in the range the nodes span (and 0).
    d2 = rng.normal(0, 1, size=pts.shape)
    np.testing.assert_allclose(warp.field(3 * disp + d2), 3 * field + warp.field(d2), atol=1e-4)
    assert field[..., 0].max() <= max(disp[:, 0].max(), 0) + 1e-5
    assert field[..., 0].min() >= min(disp[:, 0].min(), 0) - 1e-5


def test_warp_moves_content_by_the_field():
    rng = np.random.default_rng(1)
    pts = np.array([[5.0, 5.0], [30, 5], [5, 30], [30, 30]])
    warp = PiecewiseAffineField(pts, 40, 40)
    image = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
    field = np.zeros((40, 40, 2), np.float32)
    field[..., 0], field[..., 1] = 3, 2  # whole-pixel shift: right 3, down 2
    out = warp.warp(image, field)
    np.testing.assert_array_equal(out[2:, 3:], image[:-2, :-3])


def test_field_rejects_wrong_shape():
    warp = PiecewiseAffineField(np.array([[5.0, 5.0], [30, 5], [5, 30]]), 40, 40)
    with pytest.raises(ValueError, match="displacements"):
        warp.field(np.zeros((4, 2)))


def test_cli_rejects_too_few_frames(tmp_path, capsys):
    from vtcaps_tf.cli.main import main as vtcaps
    from vtcaps_tf.errors import UsageError

    assert vtcaps(["synth", "--output", str(tmp_path), "--frames", "5"]) == 2
    # 20 = an onset of up to 3 frames + sadness's rise of up to 16 frames + the apex frame
    assert "--frames must be at least 20" in capsys.readouterr().err
    with pytest.raises(UsageError):  # bad input, raised by the library itself
        synth.SynthConfig(output=str(tmp_path), frames=5)


# ---- the AU model on the real face ----------------------------------------------------------------

def test_au_terms_move_anchors_by_their_amplitude(base):
    face = base.face
    up = face.rotation @ np.array([0.0, -0.16]) * face.iod  # the AU1 entry of the table, in pixels
    left_term = synth_au.AU_TERMS["AU1"][0]
    d_left = synth_au.term_displacement(face, left_term)
    np.testing.assert_allclose(d_left[list(synth_au.INNER_BROW_L)], np.tile(up, (4, 1)), atol=1e-9)
    # Both brows together: the other brow's Gaussian tail adds under 1% of the IOD.
    d = synth_au.expression_displacement(face, ("AU1",))
    np.testing.assert_allclose(d[list(synth_au.INNER_BROW_L)], np.tile(up, (4, 1)), atol=0.01 * face.iod)
    assert np.abs(d[list(synth_au.CHIN)]).max() < 1e-3 * face.iod  # far points stay
    # Jaw drop moves the lower lip only: the upper inner lip (touching it) stays put.
    d26 = synth_au.expression_displacement(face, ("AU26",))
    assert d26[14, 1] > 0.2 * face.iod
    assert np.abs(d26[list(synth_au.UPPER_LIP_INNER)]).max() == 0
    # Contempt is one-sided: the image-right lip corner moves, the left one does not.
    dc = synth_au.expression_displacement(face, synth_au.EXPRESSIONS["contempt"])
    assert np.hypot(*dc[291]) > 0.15 * face.iod and np.hypot(*dc[61]) < 0.01 * face.iod
    with pytest.raises(ValueError, match="unknown action unit"):
        synth_au.expression_displacement(face, ("AU99",))


def test_apex_differs_from_neutral_around_moving_landmarks(base):
    face = base.face
    for label in ("surprise", "happy", "anger"):
        disp = synth_au.expression_displacement(face, synth_au.EXPRESSIONS[label])
        neutral = synth.render_frame(base, np.zeros_like(disp)).astype(np.float32)
        apex = synth.render_frame(base, disp).astype(np.float32)
        diff = np.abs(apex - neutral).mean(-1)
        moving = face.points[np.hypot(*disp.T) > 0.05 * face.iod]
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        dist = np.hypot(xx[..., None] - moving[:, 0], yy[..., None] - moving[:, 1]).min(-1)
        near = diff[dist < 0.15 * face.iod].mean()
        far = diff[dist > 0.8 * face.iod].mean()
        assert near > 5 * far and near > 4.0, (label, near, far)


# ---- generated sets -------------------------------------------------------------------------------

def test_manifest_lists_every_video(generated):
    config, manifest = generated
    with open(os.path.join(config.output, "manifest.json")) as f:
        on_disk = json.load(f)
    assert on_disk == manifest
    assert manifest["classes"] == ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
    assert (manifest["fps"], manifest["frames"], manifest["size"], manifest["tempo_only"],
            manifest["seed"]) == (25.0, 20, SIZE, False, 3)
    assert sorted({v["label"] for v in manifest["videos"]}) == manifest["classes"]
    assert len(manifest["videos"]) == 2 * 7
    for v in manifest["videos"]:
        assert v["path"] == f"{v['label']}/{v['subject']}_{v['path'].split('_')[-1]}"
        assert os.path.basename(v["path"]).split("_")[0] == v["subject"]  # the folder source's rule
        lo, hi = synth_au.RISE_FRAMES[v["label"]]
        assert 0 <= v["onset"] <= synth.MAX_ONSET and lo <= v["apex"] - v["onset"] <= hi
        assert v["apex"] < manifest["frames"]
    video = _read_video(os.path.join(config.output, manifest["videos"][0]["path"]))
    assert video.shape == (20, SIZE, SIZE, 3)
    # The settings that made the set: the fixture's, and SynthConfig's defaults for the rest.
    assert manifest["settings"] == {"per_class": 2, "subjects": 2, "seed": 3, "tempo_only": False,
                                    "face": None, "frames": 20, "size": SIZE, "fps": 25.0,
                                    "layout": "folder"}


def test_a_set_matches_only_the_settings_that_made_it(generated, tmp_path):
    config, manifest = generated
    assert synth.matches(config, synth.read_manifest(config.output))
    # Where the set goes and how many processes render it do not change its videos.
    assert synth.matches(dataclasses.replace(config, output=str(tmp_path / "elsewhere"), workers=2),
                         manifest)
    for change in ({"per_class": 3}, {"subjects": 1}, {"seed": 4}, {"frames": 24}, {"size": 96}):
        assert not synth.matches(dataclasses.replace(config, **change), manifest), change
    assert not synth.matches(config, {k: v for k, v in manifest.items() if k != "settings"})
    assert synth.read_manifest(str(tmp_path)) is None and not synth.matches(config, None)


def test_mediapipe_finds_the_face_in_every_frame(generated):
    from vtcaps_tf.face.mesh import FaceMesh

    config, manifest = generated
    missed = []
    with FaceMesh(video=False) as mesh:  # a fresh detection on every frame: no tracking help
        for v in manifest["videos"][::2]:  # one video per class
            for t, frame in enumerate(_read_video(os.path.join(config.output, v["path"]))):
                if mesh.detect(frame) is None:
                    missed.append((v["path"], t))
    assert not missed


def test_worker_count(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    auto = synth.SynthConfig(output="x")
    assert [synth.worker_count(auto, n) for n in (1, 47, 48, 168)] == [1, 1, 2, 2]
    assert synth.worker_count(dataclasses.replace(auto, workers=3), 2) == 2
    with pytest.raises(ValueError, match="--workers"):
        synth.SynthConfig(output="x", workers=-1)


def test_same_seed_same_bytes(generated, tmp_path):
    config, manifest = generated
    # The fixture's 14 videos were rendered in one process; these in two.
    again = dataclasses.replace(config, output=str(tmp_path / "again"), workers=2)
    synth.generate(again, progress=False)
    for name in ["manifest.json"] + [v["path"] for v in manifest["videos"]]:
        with open(os.path.join(config.output, name), "rb") as a, open(os.path.join(again.output, name), "rb") as b:
            assert a.read() == b.read(), name
    other = dataclasses.replace(config, output=str(tmp_path / "other"), seed=4, per_class=1)
    synth.generate(other, progress=False)
    first = manifest["videos"][0]["path"]
    with open(os.path.join(config.output, first), "rb") as a, open(os.path.join(other.output, first), "rb") as b:
        assert a.read() != b.read()


def test_tempo_only_same_apex_different_time(base, tmp_path):
    config = synth.SynthConfig(output=str(tmp_path), per_class=2, subjects=1, seed=0, frames=24,
                               size=SIZE, tempo_only=True)
    manifest = synth.generate(config, progress=False)
    assert manifest["classes"] == ["surprise_fast", "surprise_slow"] and manifest["tempo_only"]
    rise = {v["label"]: v["apex"] - v["onset"] for v in manifest["videos"]}
    assert rise["surprise_fast"] <= 5 < 14 <= rise["surprise_slow"]
    aus = {tuple(v["aus"]) for v in manifest["videos"]}
    assert len(aus) == 1  # one apex appearance

    # Same subject and capture conditions, the two tempi: equal apex frames, different apex times.
    rng = np.random.default_rng(5)
    subject = synth.draw_subject(base, "s00", rng)
    aus = synth_au.TEMPO_ONLY_EXPRESSIONS["surprise_fast"]
    fast = synth.draw_clip("surprise_fast", "s00", 0, aus, synth_au.TEMPO_ONLY_RISE["surprise_fast"], SIZE, rng)
    # No head sway, so frames 5 and 17 share the pose (sway is a function of time).
    fast = dataclasses.replace(fast, onset=1, apex=5, drift=(0.0, 0.0, 0.0))
    slow = dataclasses.replace(fast, label="surprise_slow", apex=17)
    frames_fast = synth.render_clip(base, subject, fast, aus, 24, np.random.default_rng(0)).astype(np.float32)
    frames_slow = synth.render_clip(base, subject, slow, aus, 24, np.random.default_rng(1)).astype(np.float32)
    noise = np.hypot(fast.noise, fast.noise)  # std of the difference of two independent noise draws
    apex_gap = np.abs(frames_fast[5] - frames_slow[17]).mean()
    assert apex_gap < 1.0 * noise  # |N(0, s)| has mean 0.8 s: only noise differs
    assert np.abs(frames_fast[5] - frames_slow[5]).mean() > apex_gap + 1.0  # slow is mid-rise at t=5


@pytest.mark.slow
def test_ckplus_and_afew_layouts_are_read_by_their_sources(tmp_path):
    from vtcaps_pipeline.beam import sources
    from vtcaps_pipeline.beam.sources.ckplus import read_emotion

    ck = synth.SynthConfig(output=str(tmp_path / "ck"), per_class=1, subjects=1, seed=1, frames=20,
                           size=64, layout="ckplus")
    manifest = synth.generate(ck, progress=False)
    d = sources.discover("ckplus", ck.output)
    assert sorted(i.label_name for i in d.items) == sorted(synth_au.EXPRESSIONS)
    by_path = {v["path"]: v for v in manifest["videos"]}
    for item in d.items:
        v = by_path[os.path.relpath(item.path, ck.output).replace(os.sep, "/")]
        # A CK+ sequence ends at its peak: the apex frame is the last one (held up to 6 frames).
        assert len(item.frame_files) == max(v["apex"] + 1, synth.MIN_CKPLUS_FRAMES)
        [emotion] = os.listdir(os.path.join(ck.output, "Emotion", item.video_id))
        assert emotion.endswith(f"_{len(item.frame_files):08d}_emotion.txt")
        code = read_emotion(os.path.join(ck.output, "Emotion", item.video_id, emotion))
        assert d.classes[int(code) - 1] == v["label"]

    af = synth.SynthConfig(output=str(tmp_path / "afew"), per_class=2, subjects=2, seed=1, frames=20,
                           size=64, layout="afew")
    synth.generate(af, progress=False)
    d = sources.discover("afew", af.output)
    labels = {i.label_name for i in d.items}
    assert "Neutral" in labels and "contempt" not in labels and len(d.items) == 14
    # The last subject is held out as Val_AFEW, the test split.
    assert {i.split for i in d.items} == {None, "test"}
    assert all(("Val_AFEW" in i.path) == (i.split == "test") for i in d.items)
