"""Reading videos and frame folders; every bad input gets its own clear reason."""

import os

import numpy as np
import pytest

from tests.face import fixtures as fx
from vtcaps_tf.face import Video, VideoReadError, read_video


def test_reads_avi_as_rgb(tmp_path):
    frames = np.zeros((6, 48, 64, 3), np.uint8)
    frames[..., 0] = 220  # pure red in RGB
    path = fx.write_video(str(tmp_path / "red.avi"), frames, fps=12.0)
    video = read_video(path)
    assert isinstance(video, Video)
    assert video.frames.shape == (6, 48, 64, 3) and video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(12.0)
    assert video.frames[..., 0].mean() > 180 and video.frames[..., 2].mean() < 40  # RGB, not BGR


def test_reads_frame_folder_in_name_order(tmp_path):
    import cv2

    for k in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"f_{k:03d}.png"), np.full((20, 30), 10 * k, np.uint8))  # grey
    (tmp_path / "notes.txt").write_text("not a frame")
    video = read_video(str(tmp_path), fps=25.0)
    assert video.frames.shape == (3, 20, 30, 3)
    assert [int(f[0, 0, 0]) for f in video.frames] == [0, 10, 20]
    assert video.fps == 25.0


@pytest.mark.parametrize("make, reason", [
    (lambda d: str(d / "nope.avi"), "missing"),
    (lambda d: fx.write_bad_files(str(d))["empty_file"], "empty_file"),
    (lambda d: fx.write_bad_files(str(d))["unreadable"], "unreadable"),
    (lambda d: fx.write_truncated_video(str(d / "cut.avi")), "truncated"),
    (lambda d: (os.makedirs(d / "noframes"), str(d / "noframes"))[1], "no_frames"),
])
def test_bad_inputs_have_reasons(tmp_path, make, reason):
    with pytest.raises(VideoReadError) as err:
        read_video(make(tmp_path))
    assert err.value.reason == reason
    assert str(err.value).startswith(reason)


def test_a_large_jpeg_is_decoded_reduced_and_a_small_one_whole(tmp_path):
    import cv2

    from vtcaps_tf.face.video import open_frames, read_photo

    big = np.zeros((2000, 4200, 3), np.uint8)
    big[:, :2100] = (200, 100, 50)  # left half one colour (RGB)
    path = str(tmp_path / "big.jpg")
    cv2.imwrite(path, big[..., ::-1])
    image, factor = read_photo(path, max_side=3840)
    assert factor == 2 and image.shape == (1000, 2100, 3)  # 4200 > 3840: halved
    np.testing.assert_allclose(image[500, 500], (200, 100, 50), atol=3)
    assert read_photo(path, max_side=1000)[1] == 8  # 4200 / 4 > 1000: an eighth at most
    stream = open_frames(path)
    assert stream.still and stream.scale == 2 and next(stream.frames).shape == (1000, 2100, 3)
    small = str(tmp_path / "small.jpg")
    cv2.imwrite(small, big[:200, :300])
    assert read_photo(small)[1] == 1 and read_photo(small)[0].shape == (200, 300, 3)


def test_frames_longer_than_max_side_are_downscaled_as_read(tmp_path):
    from vtcaps_tf.face.video import fit_frame, open_frames

    path = fx.write_face_video(str(tmp_path / "v.avi"), n=3, width=160)
    first = next(open_frames(path).frames)
    h, w = first.shape[:2]
    half = max(h, w) // 2  # the photo is 160x188: exactly half of each side
    stream = open_frames(path, max_side=half)
    frames = list(stream.frames)
    assert stream.scale == pytest.approx(2.0)
    assert len(frames) == 3 and frames[0].shape == (h // 2, w // 2, 3)
    # Area averaging: each output pixel is the mean of a 2x2 block.
    np.testing.assert_allclose(frames[0][10, 10], first[20:22, 20:22].reshape(-1, 3).mean(axis=0), atol=1)
    assert fit_frame(first, 1000) is first and fit_frame(first, None) is first
