"""vtcaps_tf/apps/predict_inputs.py: which paths `vtcaps predict` reads as videos or photos."""

import os

from vtcaps_tf.apps import predict
from vtcaps_tf.apps.predict_inputs import find_videos, is_photo


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb"):
        pass


def test_find_videos_walks_folders_and_reports_what_gives_nothing(tmp_path):
    root = tmp_path / "set"
    for rel in ["b.mp4", "a.AVI", "notes.txt", ".hidden.mp4",
                "sub/c.mkv", "frames/0001.jpg", "frames/0002.png", ".cache/d.mp4"]:
        _touch(str(root / rel))
    _touch(str(tmp_path / "empty" / "readme.md"))
    photo = tmp_path / "face.jpg"
    _touch(str(photo))
    missing = str(tmp_path / "missing")

    videos, errors = find_videos([str(photo), str(root), str(tmp_path / "empty"), missing])

    # by hand: a named file is taken as it is; under a folder, hidden entries are skipped, videos
    # are found by extension (any case), and a folder of images alone is one video (its frames)
    assert videos == [str(photo)] + sorted([str(root / "a.AVI"), str(root / "b.mp4"),
                                            str(root / "sub" / "c.mkv"), str(root / "frames")])
    assert [(e.video, e.error) for e in errors] == [
        (str(tmp_path / "empty"), "no video files or frame folders in it"),
        (missing, "no such file or folder")]


def test_is_photo_only_for_an_image_file(tmp_path):
    _touch(str(tmp_path / "frames" / "0001.jpg"))
    _touch(str(tmp_path / "clip.mp4"))
    assert is_photo(str(tmp_path / "frames" / "0001.jpg"))
    assert not is_photo(str(tmp_path / "frames"))  # a frame folder is a video
    assert not is_photo(str(tmp_path / "clip.mp4"))
    assert not is_photo(str(tmp_path / "gone.jpg"))


def test_predict_still_exports_find_videos():
    assert predict.find_videos is find_videos
