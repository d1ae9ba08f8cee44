"""`vtcaps predict` on generated videos of the sample photo's face (grace_hopper.jpg) with the toy
model (N=4, M=8): a face that leaves and comes back, two faces moving apart, a photo with two
faces, a long video read in bounded memory, and a video over the --max-frames limit."""

import csv
import io
import json

import numpy as np
import pytest
import toy_model

from tests.face import fixtures as fx
from vtcaps_tf.cli.main import main as vtcaps

FPS = 10.0


def _canvas(face, xs, width=360):
    """A grey frame with the face pasted at each x (top 10 px down)."""
    h, w = face.shape[:2]
    frame = np.full((h + 20, width, 3), 128, np.uint8)
    for x in xs:
        frame[10:10 + h, x:x + w] = face
    return frame


@pytest.fixture(scope="module")
def face():
    return fx.face_image(100)


def _run(args, capsys):
    rc = vtcaps(["predict", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_face_that_leaves_and_comes_back(face, toy_base_path, tmp_path, capsys):
    # 12 frames with the face, 12 without (1.2 s: longer than the 0.5 s bridge, shorter than the
    # 5 s after which a track ends), 12 with it again: clips of 4 frames 0-2 ok, 3-5 no_face, 6-8 ok.
    frames = [_canvas(face, [100 + (t % 3)]) for t in range(12)] + [_canvas(face, [])] * 12 + \
        [_canvas(face, [100 + (t % 3)]) for t in range(12)]
    video = fx.write_video(str(tmp_path / "leaves.avi"), np.stack(frames), fps=FPS)
    plot = tmp_path / "timeline.png"
    rc, out, err = _run([video, "--saved-model", toy_base_path, "--format", "json", "--plot", str(plot)],
                        capsys)
    assert rc == 0, err
    (r,) = json.loads(out)
    assert r["face"] == 0 and r["num_frames"] == 36
    statuses = [c["status"] for c in r["clips"]]
    assert statuses == ["ok"] * 3 + ["no_face"] * 3 + ["ok"] * 3
    np.testing.assert_allclose([(c["start"], c["end"]) for c in r["clips"]],
                               [(0.4 * k, 0.4 * k + 0.4) for k in range(9)])
    for c in r["clips"]:
        if c["status"] == "no_face":
            assert c["emotion"] is None and c["probabilities"] is None
    ok = np.array([[c["probabilities"][k] for k in toy_model.CLASSES] for c in r["clips"] if c["status"] == "ok"])
    np.testing.assert_allclose([r["probabilities"][k] for k in toy_model.CLASSES], ok.mean(axis=0), atol=1e-9)
    assert r["emotion"] == toy_model.CLASSES[int(np.argmax(ok.mean(axis=0)))]
    assert r["start"] == 0.0 and r["end"] == pytest.approx(3.6)
    assert "3 no_face" in err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The CSV shows the gap as rows of its own.
    rc, out, _ = _run([video, "--saved-model", toy_base_path, "--format", "csv", "-q"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["status"] for row in rows] == statuses + ["ok"]
    assert all(row["emotion"] == "" for row in rows if row["status"] == "no_face")


def test_two_faces_moving_apart_get_two_tracks(face, toy_base_path, tmp_path, capsys):
    # Face A from x=80 leftwards, face B from x=180 rightwards, 4 px a frame, 16 frames.
    frames = np.stack([_canvas(face, [80 - 4 * t, 180 + 4 * t]) for t in range(16)])
    video = fx.write_video(str(tmp_path / "apart.avi"), frames, fps=FPS)
    rc, out, err = _run([video, "--saved-model", toy_base_path, "--format", "json"], capsys)
    assert rc == 0, err
    results = json.loads(out)
    assert [r["face"] for r in results] == [0, 1]
    for r in results:
        assert [c["status"] for c in r["clips"]] == ["ok"] * 4
        assert (r["start"], r["end"]) == (0.0, pytest.approx(1.6))
    left, right = (r["box"] for r in results)
    # Mean x-centre of each track: the pasted face's centre plus its mean shift (-30 and +30 px).
    assert (left[0] + left[2]) / 2 < 140 < (right[0] + right[2]) / 2
    assert (right[0] + right[2]) / 2 - (left[0] + left[2]) / 2 == pytest.approx(100 + 60, abs=8)


def test_faces_largest_keeps_the_largest_face(toy_base_path, tmp_path, capsys):
    big, small = fx.face_image(130), fx.face_image(100)
    frames = np.full((8, big.shape[0] + 20, 420, 3), 128, np.uint8)
    frames[:, 10:10 + big.shape[0], 10:140] = big
    frames[:, 10:10 + small.shape[0], 280:380] = small
    video = fx.write_video(str(tmp_path / "two_sizes.avi"), frames, fps=FPS)
    rc, out, err = _run([video, "--saved-model", toy_base_path, "--format", "json"], capsys)
    assert rc == 0 and [r["face"] for r in json.loads(out)] == [0, 1], err
    rc, out, err = _run([video, "--saved-model", toy_base_path, "--format", "json", "--faces", "largest"],
                        capsys)
    (r,) = json.loads(out)
    assert rc == 0 and len(r["clips"]) == 2, err
    assert (r["box"][0] + r["box"][2]) / 2 < 140  # the big face on the left


def test_photo_with_two_faces(face, toy_base_path, tmp_path, capsys):
    import cv2

    from vtcaps_tf.face import FaceAnalyzer

    image = _canvas(face, [20, 220])
    path = str(tmp_path / "group.png")
    cv2.imwrite(path, image[..., ::-1])
    rc, out, err = _run([path, "--saved-model", toy_base_path, "--format", "json"], capsys)
    assert rc == 0, err
    results = json.loads(out)
    assert [r["face"] for r in results] == [0, 1]
    assert all(r["single_frame"] and len(r["clips"]) == 1 for r in results)
    assert results[0]["box"][0] < 120 < results[1]["box"][0]
    # The model saw each face's crop as a static clip: recompute with the numpy toy model.
    with FaceAnalyzer(toy_model.S, video=False, max_num_faces=4) as analyzer:
        faces = sorted(analyzer.detect_faces(image), key=lambda lm: lm[:, 0].min())
        for r, lm in zip(results, faces):
            crop, lm01 = analyzer.crop(image, lm)
            inputs = {"frames": np.repeat(crop[None, None], toy_model.N, 1),
                      "landmarks": np.repeat(lm01[None, None], toy_model.N, 1).astype(np.float32),
                      "long_frames": np.repeat(crop[None, None], toy_model.M, 1)}
            want = toy_model.reference(inputs)["probabilities"][0]
            np.testing.assert_allclose([r["probabilities"][k] for k in toy_model.CLASSES], want, atol=1e-5)


def test_long_video_is_read_in_bounded_memory(face, toy_base_path, tmp_path):
    """The frames and crops held at once are the same for a 100-frame and a 400-frame video, and
    bounded by the bridge (5 frames at 10 fps) plus the frame being read."""
    from vtcaps_tf.face import FaceAnalyzer
    from vtcaps_tf.apps.predict import InProcessModel, predict_video

    model = InProcessModel(toy_base_path)

    def frames(n):  # the face (36 px wide), with a 20-frame absence every 100 frames
        return np.stack([_canvas(face, [] if 40 <= t % 100 < 60 else [20 + t % 3], width=160)
                         for t in range(n)])

    peaks = {}
    with FaceAnalyzer(toy_model.S, max_num_faces=4) as analyzer:
        for n in (100, 400):
            path = fx.write_video(str(tmp_path / f"v{n}.avi"), frames(n), fps=FPS)
            got = {}
            (r,) = predict_video(path, model, analyzer, timelines_out=got)
            timelines = got["timelines"]
            assert timelines.num_frames == n and r.num_frames == n
            assert len(r.clips) == n // toy_model.N
            peaks[n] = (timelines.peak_frames_held, timelines.peak_crops_held)
    bridge = 5  # 0.5 s at 10 fps
    assert peaks[400] == peaks[100]
    assert peaks[400][0] <= bridge + 1
    assert peaks[400][1] <= toy_model.M + toy_model.N + 20  # a clip's window and one absence
    assert peaks[400][1] < 400 / 4


def test_max_frames_refuses_a_longer_video(face, toy_base_path, tmp_path, capsys):
    video = fx.write_video(str(tmp_path / "long.avi"), np.stack([_canvas(face, [100])] * 12), fps=FPS)
    rc, out, err = _run([video, "--saved-model", toy_base_path, "--max-frames", "8"], capsys)
    assert rc == 1
    assert "too_long" in out and "12 frames, more than the limit of 8" in out


def test_annotated_video_shows_boxes_and_no_face(face, toy_base_path, tmp_path, capsys):
    from vtcaps_tf.face import read_video

    frames = [_canvas(face, [100])] * 12 + [_canvas(face, [])] * 12 + [_canvas(face, [100])] * 12
    video = fx.write_video(str(tmp_path / "leaves.avi"), np.stack(frames), fps=FPS)
    out = tmp_path / "annotated.mp4"
    rc, _, err = _run([video, "--saved-model", toy_base_path, "--annotate", str(out), "-q"], capsys)
    assert rc == 0, err
    drawn = read_video(str(out))
    assert drawn.num_frames == 36 and drawn.frames.shape[1:] == read_video(video).frames.shape[1:]

    def near(img, rgb, tol=40):
        return np.all(np.abs(img.astype(int) - rgb) < tol, axis=-1)

    green, red = (60, 200, 60), (230, 40, 40)  # face 0's colour and the no_face mark, in RGB
    # Frame 4 (clip 1, ok): face 0's green box, none of it in the grey no-face frame 18.
    assert near(drawn.frames[4], green).sum() > 200
    assert near(drawn.frames[18], green).sum() < 20
    # Frame 18: no face anywhere: the red no_face mark in the top-left corner.
    assert near(drawn.frames[18][:40, :120], red).sum() > 30
    assert near(drawn.frames[4][:40, :120], red).sum() < 5
    # --annotate takes exactly one video.
    assert vtcaps(["predict", video, video, "--saved-model", toy_base_path, "--annotate", str(out)]) == 2
    assert "annotating needs exactly one video" in capsys.readouterr().err


@pytest.mark.slow  # a 1080p photo of 20 faces through the whole command
def test_photo_with_20_faces_and_max_faces_16_reports_4_skipped(toy_base_path, tmp_path, capsys):
    import cv2

    widths = list(range(40, 140, 5))
    image, pasted = fx.group_scene(widths, size=(1920, 1080), seed=1)
    path = str(tmp_path / "crowd.jpg")
    cv2.imwrite(path, image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    rc, out, err = _run([path, "--saved-model", toy_base_path, "--format", "json", "--max-faces", "16"],
                        capsys)
    assert rc == 0, err
    results = json.loads(out)
    assert [r["face"] for r in results] == list(range(16))
    for r in results:
        assert r["skipped_faces"] == [{"reason": "over_limit", "faces": 4, "frames": 1}]
    # The 16 analysed are the 16 largest: the smallest analysed face is the 5th smallest pasted.
    smallest = min(r["box"][2] - r["box"][0] for r in results)
    assert smallest == pytest.approx(sorted(widths)[4], rel=0.2)
    rc, out, err = _run([path, "--saved-model", toy_base_path, "--max-faces", "16"], capsys)
    assert rc == 0 and "skipped faces: 4 over_limit" in out, err


def test_photo_of_a_face_turned_60_degrees_says_so(toy_base_path, tmp_path, capsys):
    import cv2

    image, _ = fx.turned_face(200, 60)
    path = str(tmp_path / "turned.png")
    cv2.imwrite(path, image[..., ::-1])
    rc, out, err = _run([path, "--saved-model", toy_base_path, "--format", "json"], capsys)
    (r,) = json.loads(out)
    assert r["error"] == "no face found in the image"
    assert r["skipped_faces"] == [{"reason": "turned", "faces": 1, "frames": 1}]


@pytest.mark.slow
def test_eight_moving_faces_in_a_10_second_1080p_video_get_eight_tracks(toy_base_path, tmp_path, capsys):
    """8 faces of 40-150 px moving up to 60 px (x) and 20 px (y) from their places and back, 10 s
    at 5 fps (50 frames: a low rate keeps the test short; each face moves up to 2.4 px a frame)."""
    widths = [40, 55, 70, 85, 100, 115, 130, 150]
    frames, boxes = fx.moving_group_frames(widths, 50, size=(1920, 1080), seed=2)
    video = fx.write_video(str(tmp_path / "group.avi"), frames, fps=5.0)
    del frames
    rc, out, err = _run([video, "--saved-model", toy_base_path, "--format", "json"], capsys)
    assert rc == 0, err
    results = json.loads(out)
    assert [r["face"] for r in results] == list(range(8))
    mean_centres = ((boxes[..., :2] + boxes[..., 2:]) / 2).mean(axis=0)  # [8, 2]
    matched = []
    for r in results:
        assert r["start"] == 0.0 and r["end"] == pytest.approx(10.0)
        assert [c["status"] for c in r["clips"]] == ["ok"] * (50 // toy_model.N)
        centre = np.array([(r["box"][0] + r["box"][2]) / 2, (r["box"][1] + r["box"][3]) / 2])
        k = int(np.argmin(np.linalg.norm(mean_centres - centre, axis=1)))
        assert np.linalg.norm(mean_centres[k] - centre) < widths[k] / 4
        matched.append(k)
    assert sorted(matched) == list(range(8))
    assert all(r["skipped_faces"] == [] for r in results)


@pytest.mark.slow  # a 4400x2475 photo composed and written
def test_a_large_photo_is_analysed_with_boxes_in_its_own_pixels(toy_base_path, tmp_path, capsys):
    import cv2

    image, pasted = fx.group_scene([600, 400], size=(4400, 2475), seed=9)
    path = str(tmp_path / "phone.jpg")
    cv2.imwrite(path, image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    del image
    rc, out, err = _run([path, "--saved-model", toy_base_path, "--format", "json"], capsys)
    assert rc == 0, err
    results = json.loads(out)
    assert len(results) == 2 and all(r["skipped_faces"] == [] for r in results)
    for r, want in zip(results, sorted(pasted.tolist())):  # left to right, as pasted
        # The 68 landmarks' box: the pasted face's sides and chin; its top is the brows, lower
        # than the top of the face mesh's box, which `fixtures.FACE_IN_CUT` holds.
        x0, y0, x1, y1 = r["box"]
        np.testing.assert_allclose([x0, x1, y1], [want[0], want[2], want[3]], atol=0.08 * (want[2] - want[0]))
        assert want[1] < y0 < (want[1] + want[3]) / 2


@pytest.mark.slow  # a 2400x1350 video composed, written and read
def test_a_video_larger_than_1920_px_is_analysed_downscaled_with_boxes_in_its_pixels(
        toy_base_path, tmp_path, capsys):
    frame, pasted = fx.group_scene([240], size=(2400, 1350), seed=10, positions=[(1500, 400)])
    video = fx.write_video(str(tmp_path / "wide.avi"), np.stack([frame] * 8), fps=FPS)
    rc, out, err = _run([video, "--saved-model", toy_base_path, "--format", "json"], capsys)
    assert rc == 0, err
    (r,) = json.loads(out)
    want = pasted[0]
    np.testing.assert_allclose([r["box"][0], r["box"][2], r["box"][3]], [want[0], want[2], want[3]],
                               atol=0.08 * (want[2] - want[0]))
