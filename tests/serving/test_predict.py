"""`vtcaps predict` on a short face video (grace_hopper.jpg, shifted a little per frame) with the toy
model: in process and over REST, every output format, the plot, and videos it cannot use."""

import csv
import io
import json
import os

import numpy as np
import pytest
import toy_model

from vtcaps_tf.cli.main import main as vtcaps

FPS = 10.0
FRAMES = 10  # two clips of N=4 (the remainder of 2 frames is dropped)


def _write_avi(path, frames):
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (w, h))
    for rgb in frames:
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    import cv2
    import matplotlib.cbook

    root = tmp_path_factory.mktemp("videos")
    bgr = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    face = cv2.resize(bgr, (128, 160))[..., ::-1]
    shifted = [np.roll(face, (t % 3, (2 * t) % 3), axis=(0, 1)) for t in range(FRAMES)]
    (root / "mixed").mkdir()
    _write_avi(root / "mixed" / "face.avi", shifted)
    _write_avi(root / "mixed" / "blank.avi", [np.full((64, 64, 3), 128, np.uint8)] * 6)
    (root / "broken.avi").write_bytes(b"not a video at all")
    return root


def _run(args, capsys):
    rc = vtcaps(["predict", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _expected_clip_probabilities(video_path):
    """Independent of the predict module: read, analyse, cut by hand, numpy toy model."""
    from vtcaps_tf.face import FaceAnalyzer, read_video

    video = read_video(str(video_path))
    analyzer = FaceAnalyzer(crop_size=toy_model.S, video=True)
    try:
        track = analyzer.analyze(video.frames)
    finally:
        analyzer.close()
    # N=4, M=8: clip k covers frames 4k..4k+3; its TPN window starts 2 frames earlier, clamped.
    short = [range(0, 4), range(4, 8)]
    long = [[0, 0, 0, 1, 2, 3, 4, 5], list(range(2, 10))]
    inputs = {"frames": np.stack([track.crops[list(s)] for s in short]),
              "landmarks": np.stack([track.landmarks[list(s)] for s in short]),
              "long_frames": np.stack([track.crops[w] for w in long])}
    return toy_model.reference(inputs)["probabilities"]


def test_in_process_json_matches_independent_computation(videos, toy_base_path, tmp_path, capsys):
    out = tmp_path / "result.json"
    rc, stdout, stderr = _run([str(videos / "mixed" / "face.avi"), "--saved-model", toy_base_path,
                               "--format", "json", "--output", str(out)], capsys)
    assert rc == 0, stderr
    assert "[1/1]" in stderr
    (result,) = json.loads(out.read_text())
    assert result["num_clips"] == 2 and result["num_frames"] == FRAMES and result["fps"] == FPS
    assert [(c["start"], c["end"]) for c in result["clips"]] == [(0.0, 0.4), (0.4, 0.8)]
    probs = np.array([[c["probabilities"][k] for k in toy_model.CLASSES] for c in result["clips"]])
    np.testing.assert_allclose(probs, _expected_clip_probabilities(videos / "mixed" / "face.avi"),
                               atol=1e-5)
    mean = probs.mean(axis=0)
    assert result["emotion"] == toy_model.CLASSES[int(np.argmax(mean))]
    assert result["probability"] == pytest.approx(mean.max(), abs=1e-9)
    assert [c["emotion"] for c in result["clips"]] == [toy_model.CLASSES[i] for i in probs.argmax(axis=1)]


def test_rest_gives_the_in_process_numbers(videos, toy_base_path, toy_server, capsys):
    # Over REST each clip travels as a schema-2 record (JPEG crops, as the training data holds
    # them) to serve_examples: the numbers agree up to the JPEG round trip.
    video = str(videos / "mixed" / "face.avi")
    rc, local, err = _run([video, "--saved-model", toy_base_path, "--format", "json"], capsys)
    assert rc == 0, err
    rc, remote, err = _run([video, "--server", toy_server.rest_url, "--model-name", "toy",
                            "--format", "json"], capsys)
    assert rc == 0, err
    (a,), (b,) = json.loads(local), json.loads(remote)
    assert a["emotion"] == b["emotion"]
    for ca, cb in zip(a["clips"], b["clips"]):
        for k in toy_model.CLASSES:
            assert ca["probabilities"][k] == pytest.approx(cb["probabilities"][k], abs=2e-3)


def test_folder_with_a_faceless_video_csv_and_plot(videos, toy_base_path, tmp_path, capsys):
    plot = tmp_path / "timeline.png"
    rc, stdout, stderr = _run([str(videos / "mixed"), "--saved-model", toy_base_path,
                               "--format", "csv", "--plot", str(plot)], capsys)
    assert rc == 0, stderr
    assert "[1/2]" in stderr and "[2/2]" in stderr
    assert "blank.avi: no prediction: no face found" in stderr
    rows = list(csv.DictReader(io.StringIO(stdout)))
    blank = [r for r in rows if r["video"].endswith("blank.avi")]
    assert len(blank) == 1 and "no face" in blank[0]["error"]
    face = [r for r in rows if r["video"].endswith("face.avi")]
    assert [r["clip"] for r in face] == ["0", "1", "all"]
    for r in face:
        assert sum(float(r[k]) for k in toy_model.CLASSES) == pytest.approx(1.0, abs=1e-5)
    mean = np.mean([[float(r[k]) for k in toy_model.CLASSES] for r in face[:2]], axis=0)
    np.testing.assert_allclose([float(face[2][k]) for k in toy_model.CLASSES], mean, atol=1e-6)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_and_failures_exit_non_zero_only_when_nothing_predicted(videos, toy_base_path, capsys):
    rc, stdout, stderr = _run([str(videos / "mixed" / "blank.avi"), str(videos / "broken.avi"),
                               str(videos / "missing.avi"), "--saved-model", toy_base_path], capsys)
    assert rc == 1
    assert "missing.avi: no such file or folder" in stderr
    assert "broken.avi: no prediction: cannot read the video" in stdout
    assert "blank.avi: no prediction: no face found" in stdout
    rc, stdout, stderr = _run([str(videos / "broken.avi"), str(videos / "mixed" / "face.avi"),
                               "--saved-model", toy_base_path, "--format", "table"], capsys)
    assert rc == 0
    assert "face.avi [face 0]: " in stdout and "from 2 clips" in stdout
    assert "clip   start     end  status" in stdout


def test_clear_errors_for_a_bad_model_location(videos, tmp_path, capsys):
    video = str(videos / "mixed" / "face.avi")
    rc, _, err = _run([video, "--saved-model", str(tmp_path)], capsys)
    assert rc == 2 and "neither a SavedModel nor a base path" in err  # bad input
    rc, _, err = _run([video, "--server", "http://127.0.0.1:9", "--model-name", "toy"], capsys)
    assert rc == 1 and "cannot use model 'toy'" in err
    with pytest.raises(SystemExit):
        vtcaps(["predict", video])  # neither --server nor --saved-model
    assert os.path.exists(video)


def test_the_library_refuses_what_it_cannot_predict(tmp_path):
    from vtcaps_tf.apps.options import ModelSource, PredictOptions
    from vtcaps_tf.apps.predict import predict_paths
    from vtcaps_tf.errors import UsageError

    options = PredictOptions(ModelSource(saved_model=str(tmp_path)))
    missing = str(tmp_path / "missing.mp4")
    with pytest.raises(UsageError, match=f"nothing to predict: {missing}: no such file or folder"):
        predict_paths([missing], options)
    with pytest.raises(UsageError, match="exactly one of"):
        ModelSource()
    with pytest.raises(UsageError, match="batch size must be at least 1"):
        PredictOptions(ModelSource(server="http://127.0.0.1:9"), batch_size=0)
    with pytest.raises(UsageError, match=r"\.png"):
        PredictOptions(ModelSource(server="http://127.0.0.1:9"), plot="timeline.jpg")


def test_base_path_with_a_zero_padded_version_folder(toy_base_path, tmp_path):
    """TF Serving's own layout (`00000123`): predict loads the newest version by its folder name."""
    import shutil

    from vtcaps_tf.apps.predict_models import InProcessModel

    base = tmp_path / "model"
    shutil.copytree(os.path.join(toy_base_path, "1"), base / "00000009")
    shutil.copytree(os.path.join(toy_base_path, "1"), base / "10")
    assert InProcessModel(str(base)).path == str(base / "10")
    shutil.rmtree(base / "10")
    assert InProcessModel(str(base)).path == str(base / "00000009")
