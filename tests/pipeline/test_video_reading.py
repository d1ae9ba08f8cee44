"""How the preprocessing job's DoFn reads videos: frame by frame with a frame limit (a longer video
is a dead letter, not a killed worker), and a video with several faces is reported."""

import logging

import numpy as np

from vtcaps_pipeline.beam import transforms
from tests.face import fixtures as fx
from tests.pipeline.test_transforms import _config, _item, _run, _Splits


def _dofn(**kw):
    dofn = transforms.AnalyzeVideoFn(_config(**kw), split_of=_Splits())
    dofn.setup()
    return dofn


def test_video_over_max_frames_is_a_dead_letter(tmp_path):
    path = fx.write_face_video(str(tmp_path / "happy" / "s1_0.avi"), n=12)
    dofn = _dofn(max_frames=8)
    try:
        examples, tagged = _run(dofn, _item(path))
    finally:
        dofn.teardown()
    assert examples == []
    (letter,) = tagged["dead_letters"]
    assert letter["reason"] == "too_long" and "12 frames" in letter["detail"]


def test_a_video_with_two_faces_is_reported(tmp_path, caplog):
    big, small = fx.face_image(120), fx.face_image(100)
    frames = np.full((8, 170, 360, 3), 128, np.uint8)
    frames[:, 10:10 + big.shape[0], 10:130] = big
    frames[:, 20:20 + small.shape[0], 220:320] = small
    path = fx.write_video(str(tmp_path / "happy" / "s1_0.avi"), frames)
    dofn = _dofn()
    try:
        with caplog.at_level(logging.WARNING, logger=transforms.__name__):
            examples, tagged = _run(dofn, _item(path))
    finally:
        dofn.teardown()
    # 8 frames: 2 clips of 4, in one record.
    assert len(examples) == 1 and "dead_letters" not in tagged
    assert tagged["outcomes"][0]["clips"] == 2
    assert any("shows 2 faces" in r.getMessage() for r in caplog.records)
