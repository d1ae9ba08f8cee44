"""`vtcaps stream` on a file source with the toy model (N=4, M=8): JSON lines per face and window
with their latency, every frame analysed from a file, paced reading with --realtime, and the
reader dropping the oldest frame rather than falling behind."""

import json
import time

import numpy as np
import pytest
import toy_model

from tests.face import fixtures as fx
from vtcaps_tf.apps.stream import FrameReader
from vtcaps_tf.cli.stream import main as stream_command

FPS = 10.0


def _two_faces(n):
    face = fx.face_image(100)
    h, w = face.shape[:2]
    frames = np.full((n, h + 20, 360, 3), 128, np.uint8)
    for t in range(n):
        frames[t, 10:10 + h, 20:20 + w] = face
        frames[t, 10:10 + h, 220:220 + w] = face
    return frames


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return fx.write_video(str(tmp_path_factory.mktemp("stream") / "two.avi"), _two_faces(32), fps=FPS)


def _summary(err):
    (line,) = [x for x in err.splitlines() if x.startswith("summary: ")]
    return json.loads(line[len("summary: "):])


def test_file_source_gives_json_lines_per_face(video, toy_base_path, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    annotated = tmp_path / "live.mp4"
    rc = stream_command([video, "--saved-model", toy_base_path, "--output", str(out), "--annotate", str(annotated)])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    summary = _summary(err)
    assert summary["frames_read"] == 32 and summary["frames_analysed"] == 32 and summary["frames_dropped"] == 0
    assert summary["predictions"] == len(lines)
    by_face = {}
    for rec in lines:
        by_face.setdefault(rec["face"], []).append(rec)
        assert rec["latency_ms"] >= 0 and rec["window"] == [rec["frame"] - toy_model.M + 1, rec["frame"]]
        assert rec["status"] == "ok" and set(rec["probabilities"]) == set(toy_model.CLASSES)
        assert sum(rec["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sorted(by_face) == [0, 1]
    for recs in by_face.values():
        frames = [r["frame"] for r in recs]
        # A window is full after M frames of the face; then one prediction every N frames.
        assert len(frames) >= 5 and np.all(np.diff(frames) == toy_model.N)
    assert annotated.stat().st_size > 0
    assert summary["skipped_faces"] == [] and all(rec["skipped_faces"] == {} for rec in lines)


def test_faces_over_the_limit_are_reported_per_window_and_in_the_summary(toy_base_path, tmp_path, capsys):
    frame, _ = fx.group_scene([90, 80, 70], size=(480, 270), seed=8)
    video = fx.write_video(str(tmp_path / "three.avi"), np.stack([frame] * 12), fps=10.0)
    out = tmp_path / "preds.jsonl"
    rc = stream_command([video, "--saved-model", toy_base_path, "--output", str(out), "--max-faces", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted({rec["face"] for rec in lines}) == [0, 1]
    assert all(rec["skipped_faces"] == {"over_limit": 1} for rec in lines)
    assert _summary(err)["skipped_faces"] == [{"reason": "over_limit", "faces": 1, "frames": 12}]


def test_realtime_file_is_paced_at_its_frame_rate(video, toy_base_path, capsys):
    start = time.perf_counter()
    rc = stream_command([video, "--saved-model", toy_base_path, "--realtime", "--max-frames", "20"])
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert rc == 0
    summary = _summary(captured.err)
    assert summary["frames_read"] == 20
    assert summary["frames_analysed"] + summary["frames_dropped"] == 20
    assert elapsed >= 19 / FPS  # the 20th frame is read no earlier than 1.9 s in
    for rec in map(json.loads, captured.out.splitlines()):
        # M analysed frames; with frames dropped between them the window spans more of the source.
        assert rec["latency_ms"] >= 0 and rec["window"][1] - rec["window"][0] >= toy_model.M - 1


class _FakeCapture:
    def __init__(self, n):
        self.n, self.t = n, 0

    def read(self):
        if self.t >= self.n:
            return False, None
        self.t += 1
        return True, np.full((4, 4, 3), self.t, np.uint8)


def test_reader_drops_the_oldest_frames_when_behind():
    reader = FrameReader(_FakeCapture(50), drop=True)
    reader.start()
    got = []
    while True:
        item = reader.frames.get()
        if item is None:
            break
        got.append(item[0])
        time.sleep(0.01)  # a slow analysis
    reader.join()
    assert reader.read == 50 and reader.dropped > 0
    assert len(got) + reader.dropped == 50
    assert got == sorted(got) and got[-1] == 49  # in order, and the newest frame is never lost


def test_reader_without_drop_keeps_every_frame():
    reader = FrameReader(_FakeCapture(30), drop=False)
    reader.start()
    got = []
    while (item := reader.frames.get()) is not None:
        got.append(item[0])
    assert got == list(range(30)) and reader.dropped == 0
