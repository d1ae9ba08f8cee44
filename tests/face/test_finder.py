"""FaceFinder on scenes composed from the sample photo's face (grace_hopper.jpg, pasted, mirrored,
scaled, rotated and turned): groups of small faces, a distant face, turned heads, more faces than
the limit, partly covered faces, a phone-sized photo, and the landmarks of a face at selfie
distance."""

import numpy as np
import pytest

from tests.face import fixtures as fx
from vtcaps_tf.face.finder import (FaceFinder, MIN_FACE_PIXELS, SkipTally, SkippedFace, head_turn,
                                   tile_origins)
from vtcaps_tf.face.tracking import box_iou


@pytest.fixture(scope="module")
def finder():
    with FaceFinder(video=False, max_faces=16) as f:
        yield f


def _match(found_boxes, pasted_boxes, min_iou=0.4):
    """For each pasted face, the index of the found box overlapping it by at least min_iou."""
    out = []
    for p in pasted_boxes:
        ious = [box_iou(p, b) for b in found_boxes]
        out.append(int(np.argmax(ious)) if ious and max(ious) >= min_iou else None)
    return out


def test_tiles_cover_the_image_with_overlap():
    assert tile_origins(400, 480, 120) == [0]
    # 1920 px: starts every 360 px, the last flush with the end.
    assert tile_origins(1920, 480, 120) == [0, 360, 720, 1080, 1440]
    assert tile_origins(1080, 480, 120) == [0, 360, 600]


def test_eight_faces_of_40_to_150_px_in_a_1080p_photo_are_all_found(finder):
    widths = [40, 55, 70, 85, 100, 115, 130, 150]
    img, pasted = fx.group_scene(widths, size=(1920, 1080), seed=0)
    found = finder.find(img)
    matches = _match([f.box for f in found.faces], pasted)
    assert None not in matches and len(set(matches)) == 8 and len(found.faces) == 8
    assert found.skipped == []
    # Largest first.
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in found.faces]
    assert areas == sorted(areas, reverse=True)


def test_a_face_at_5_percent_of_a_1080p_frame_is_found(finder):
    img, pasted = fx.group_scene([96], size=(1920, 1080), seed=4, positions=[(1500, 150)])
    found = finder.find(img)
    assert len(found.faces) == 1 and _match([found.faces[0].box], pasted) == [0]


def test_twenty_faces_with_a_limit_of_16_analyse_the_16_largest_and_skip_4(finder):
    widths = list(range(40, 140, 5))  # 20 faces, 40-135 px
    img, pasted = fx.group_scene(widths, size=(1920, 1080), seed=1)
    found = finder.find(img)
    assert len(found.faces) == 16
    largest = np.argsort(widths)[::-1][:16]
    assert sorted(_match([f.box for f in found.faces], pasted[largest])) == list(range(16))
    assert [s.reason for s in found.skipped] == ["over_limit"] * 4
    smallest = pasted[np.argsort(widths)[:4]]
    assert None not in _match([s.box for s in found.skipped], smallest)
    assert SkipTally.of(found.skipped) == [{"reason": "over_limit", "faces": 4, "frames": 1}]


def test_a_face_turned_30_degrees_is_found_and_one_turned_60_is_skipped_as_turned(finder):
    img, pasted = fx.turned_face(200, 30)
    found = finder.find(img)
    assert len(found.faces) == 1 and found.faces[0].turn < 45
    # Its landmarks lie on the face: the eyes and mouth inside the pasted (unturned) box.
    lm = found.faces[0].landmarks
    assert np.all((lm[36:68] >= pasted[:2]) & (lm[36:68] <= pasted[2:]))
    img, _ = fx.turned_face(200, 60)
    found = finder.find(img)
    assert found.faces == [] and [s.reason for s in found.skipped] == ["turned"]


def test_head_turn_reads_the_eye_line_in_depth_and_the_face_proportions():
    # A frontal face by the frontal proportion (eyes 1.45 times the eye-to-mouth drop) and a flat
    # eye line: 0 degrees; the eye line 45 degrees deep in z: 45 degrees.
    lm = np.zeros((68, 2))
    lm[36], lm[45] = (0, 0), (145, 0)
    lm[48], lm[54] = (40, 100), (105, 100)
    mesh = np.zeros((468, 3))
    mesh[33], mesh[263] = (0, 0, 0), (145, 0, 0)
    assert head_turn(mesh, lm) == pytest.approx(0.0, abs=1e-6)
    mesh[263] = (145, 0, 145)
    assert head_turn(mesh, lm) == pytest.approx(45.0)
    # Squeezed to cos(60) of its width: 60 degrees by the proportions.
    mesh[263] = (72.5, 0, 0)
    lm[45] = (72.5, 0)
    lm[48], lm[54] = (20, 100), (52.5, 100)
    assert head_turn(mesh, lm) == pytest.approx(60.0)


def test_faces_below_the_minimum_size_are_reported_too_small():
    img, pasted = fx.group_scene([120, 60], size=(640, 360), seed=2)
    with FaceFinder(video=False, max_faces=16, min_face=80) as f:
        found = f.find(img)
    assert len(found.faces) == 1 and _match([found.faces[0].box], pasted[:1]) == [0]
    assert [s.reason for s in found.skipped] == ["too_small"]
    assert _match([found.skipped[0].box], pasted[1:]) == [0]
    assert MIN_FACE_PIXELS <= 40  # the smallest group face is analysed by default


@pytest.mark.slow  # composing the 6000x4000 scene is most of it
def test_a_phone_sized_photo_is_analysed_not_refused(finder):
    img, pasted = fx.group_scene([900, 600], size=(6000, 4000), seed=5)
    found = finder.find(img)
    assert sorted(_match([f.box for f in found.faces], pasted)) == [0, 1]


def test_landmarks_of_a_face_at_selfie_distance_are_those_of_the_mesh_alone(finder):
    """A 300-px face in a 1000-px frame: every landmark within 1% of the face box's width of what
    the face mesh alone (the still-image mesh, and the video mesh's first frame) gives."""
    from vtcaps_tf.face.landmarks import landmarks68
    from vtcaps_tf.face.mesh import FaceMesh

    img, pasted = fx.group_scene([300], size=(1000, 700), seed=1, positions=[(300, 100)])
    (face,) = finder.find(img).faces
    width = face.box[2] - face.box[0]
    for video in (False, True):
        with FaceMesh(video=video, max_num_faces=4) as mesh:
            alone = landmarks68(mesh.detect(img))
        assert np.max(np.abs(face.landmarks - alone)) <= 0.01 * width


def test_a_video_finder_follows_the_faces_and_detects_every_k_frames():
    img, pasted = fx.group_scene([60, 90], size=(960, 540), seed=6)
    with FaceFinder(video=True, max_faces=16, detect_every=3) as f:
        runs = [f.find(img) for _ in range(5)]
        assert [len(r.faces) for r in runs] == [2] * 5
        for r in runs:
            assert sorted(_match([x.box for x in r.faces], pasted)) == [0, 1]
        f.reset()
        assert len(f.find(np.zeros((540, 960, 3), np.uint8)).faces) == 0


def test_a_lone_face_coming_near_and_going_back_is_followed_on_every_frame():
    """A video of one face growing from 100 to 300 px wide in a 640x480 frame, 10 px a frame, and
    shrinking back: it crosses the selfie distance (NEAR_FRACTION of the frame) both ways, so the
    finder follows it on face windows, then on whole frames, then on windows again. Every frame
    gives the face, and its landmarks are no further from the still-image mesh's on that frame
    (the largest distance over the frames, in face widths) than those of the video-mode mesh
    alone, which lags a face changing size as much."""
    from vtcaps_tf.face.finder import NEAR_FRACTION
    from vtcaps_tf.face.landmarks import landmarks68
    from vtcaps_tf.face.mesh import FaceMesh

    widths = [100 + 10 * min(t, 40 - t) for t in range(41)]  # 100 .. 300 .. 100
    frames = []
    for w in widths:
        img = fx.background(640, 480, seed=4)
        cut, box = fx.face_cut(w)
        fx.paste(img, cut, box, round(320 - (box[0] + box[2]) / 2), round(240 - (box[1] + box[3]) / 2))
        frames.append(img)
    near = [w >= NEAR_FRACTION * 640 for w in widths]
    assert any(near) and not all(near)
    finder_off, alone_off = [], []
    with (FaceFinder(video=True, max_faces=1) as finder, FaceMesh(video=False) as still,
          FaceMesh(video=True) as video_mesh):
        for img in frames:
            (face,) = finder.find(img).faces
            truth = landmarks68(still.detect(img))
            width = np.ptp(truth[:, 0])
            finder_off.append(np.max(np.abs(face.landmarks - truth)) / width)
            alone_off.append(np.max(np.abs(landmarks68(video_mesh.detect(img)) - truth)) / width)
    assert max(finder_off) <= max(alone_off), (max(finder_off), max(alone_off))


def test_skip_tally_counts_frames_and_the_most_in_one_frame():
    box = np.zeros(4)
    tally = SkipTally()
    tally.add([SkippedFace("over_limit", box)] * 3)
    tally.add([SkippedFace("over_limit", box), SkippedFace("too_small", box)])
    tally.add([])
    assert tally.to_list() == [{"reason": "too_small", "faces": 1, "frames": 1},
                               {"reason": "over_limit", "faces": 3, "frames": 2}]


@pytest.mark.parametrize("covered", ["mouth", "side"])
def test_a_face_a_third_covered_still_gets_its_landmarks(finder, covered):
    img, pasted = fx.group_scene([150], size=(640, 360), seed=3)
    x0, y0, x1, y1 = pasted[0].round().astype(int)
    third = (y1 - y0) // 3 if covered == "mouth" else (x1 - x0) // 3
    if covered == "mouth":  # a hand or a cup over the lower third
        img[y1 - third:y1 + 10, x0 - 10:x1 + 10] = (40, 90, 160)
    else:  # the right third behind something
        img[y0 - 10:y1 + 10, x1 - third:x1 + 10] = (40, 90, 160)
    found = finder.find(img)
    assert len(found.faces) == 1 and _match([found.faces[0].box], pasted) == [0]
    lm = found.faces[0].landmarks
    eyes = (lm[36:48].mean(axis=0) - pasted[0, :2]) / (pasted[0, 2:] - pasted[0, :2])
    assert 0.2 < eyes[0] < 0.8 and 0.2 < eyes[1] < 0.6  # the eyes where the pasted face's are
