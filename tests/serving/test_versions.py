"""Version management: a new version dropped into the base path while requests run is picked up with
no failed request; the model config file with version policies and labels."""

import errno
import logging
import os
import shutil
import threading
import time

import numpy as np
import pytest
import requests
import toy_model

from vtcaps_tf.serving.config_file import ConfigFileError, read_model_config_file
from vtcaps_tf.serving.servables import ModelSpec, ServedModel, VersionPolicy, ready_versions
from vtcaps_tf.export.versions import parse_version, version_dirs
from vtcaps_tf.serving.server import ModelServer, ServerConfig


def _copy_version(src, dst):
    """Copy a SavedModel so that saved_model.pb appears last, as an exporter writing in place would."""
    os.makedirs(dst)
    for entry in os.listdir(src):
        if entry != "saved_model.pb":
            (shutil.copytree if os.path.isdir(os.path.join(src, entry)) else shutil.copy2)(
                os.path.join(src, entry), os.path.join(dst, entry))
    shutil.copy2(os.path.join(src, "saved_model.pb"), os.path.join(dst, "saved_model.pb"))


def test_ready_versions_need_saved_model_pb(tmp_path):
    (tmp_path / "3").mkdir()
    (tmp_path / "tmp-4").mkdir()
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "saved_model.pb").write_bytes(b"")
    assert ready_versions(str(tmp_path)) == [5, 12]
    assert ready_versions(str(tmp_path / "missing")) == []


@pytest.fixture
def unreadable(tmp_path, monkeypatch):
    """A base path made unreadable (chmod 000). Where permissions do not bite (the tests run as
    root), listing it fails through an injected PermissionError instead: os.listdir is
    monkeypatched to raise for that one path, as the kernel would for another user."""
    base = tmp_path / "models"
    (base / "3").mkdir(parents=True)
    (base / "3" / "saved_model.pb").write_bytes(b"")
    base.chmod(0)
    if os.access(base, os.R_OK):  # root: inject the error the permission would give
        listdir = os.listdir

        def refuse(path="."):
            if os.fspath(path) == str(base):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(base))
            return listdir(path)

        monkeypatch.setattr(os, "listdir", refuse)
    yield base
    base.chmod(0o755)


def test_an_unreadable_base_path_is_an_error_not_an_empty_one(unreadable, tmp_path):
    with pytest.raises(PermissionError) as err:
        version_dirs(str(unreadable))
    assert err.value.errno == errno.EACCES
    assert str(unreadable) in str(err.value) and "Permission denied" in str(err.value)
    with pytest.raises(PermissionError):
        ready_versions(str(unreadable))
    assert version_dirs(str(tmp_path / "missing")) == {}  # one that does not exist has none yet


def test_serving_logs_an_unreadable_base_path_and_keeps_polling(unreadable, monkeypatch, caplog,
                                                                 toy_base_path):
    served = ServedModel(ModelSpec("toy", str(unreadable)), warmup=False)
    with caplog.at_level(logging.ERROR, logger="vtcaps_tf.serving.servables"):
        served.poll()
        served.poll()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # logged once while it stays the same
    assert str(unreadable) in errors[0] and "Permission denied" in errors[0]
    assert served.list_error is not None and served.versions == []
    # Readable again, with a real version in it: the next poll loads it.
    monkeypatch.undo()
    unreadable.chmod(0o755)
    shutil.rmtree(unreadable / "3")
    shutil.copytree(os.path.join(toy_base_path, "1"), unreadable / "1")
    served.poll()
    assert served.versions == [1] and served.list_error is None


@pytest.mark.parametrize("name, version", [
    ("123", 123), ("00000123", 123), ("0", 0), ("1712345678901", 1712345678901),
    ("9223372036854775807", 2 ** 63 - 1),  # int64's largest
    ("9223372036854775808", None), ("-1", None), ("1a", None), ("", None), ("1.5", None),
    ("\u0661\u0662\u0663", None), ("\u00b2", None),  # Arabic-Indic digits, superscript two
])
def test_version_folder_names_parse_as_tf_serving_reads_them(name, version):
    assert parse_version(name) == version


def test_zero_padded_folders_keep_their_names_and_duplicates_resolve_to_the_last_name(tmp_path):
    for name in ("00000123", "7", "007", "0009", "tmp-12"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    # "007" and "7" are both version 7; TF Serving keeps the name that sorts last ("7").
    assert version_dirs(str(tmp_path)) == {7: "7", 9: "0009", 123: "00000123"}
    assert ready_versions(str(tmp_path)) == [7, 9, 123]
    (tmp_path / "200").mkdir()  # no SavedModel file yet: not ready, but its number is taken
    assert ready_versions(str(tmp_path)) == [7, 9, 123]
    assert version_dirs(str(tmp_path), ready=False) == {7: "7", 9: "0009", 123: "00000123", 200: "200"}


def test_zero_padded_versions_load_switch_and_follow_the_policy(tmp_path, toy_base_path):
    base = tmp_path / "padded"
    shutil.copytree(os.path.join(toy_base_path, "1"), base / "00000001")
    latest = ServedModel(ModelSpec("toy", str(base)), warmup=False)
    latest.poll()
    assert latest.versions == [1]
    assert latest.get().path == str(base / "00000001")
    _copy_version(os.path.join(toy_base_path, "1"), str(base / "00000002"))
    latest.poll()
    assert latest.versions == [2]
    assert latest.get().path == str(base / "00000002")
    assert [(v, s.state) for v, s in latest.status()] == [(2, "AVAILABLE"), (1, "END")]
    pinned = ServedModel(ModelSpec("toy", str(base), VersionPolicy("specific", versions=(1,))),
                         warmup=False)
    pinned.poll()
    assert pinned.versions == [1]


def test_switches_to_new_version_under_load_without_failures(tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    toy_model.write_toy_saved_model(str(base / "1"), bias=0.0)
    staged = toy_model.write_toy_saved_model(str(tmp_path / "staged"), bias=4.0)
    inputs = toy_model.random_inputs(1, seed=4)
    expected = {1: toy_model.reference(inputs, 0.0)["probabilities"][0],
                2: toy_model.reference(inputs, 4.0)["probabilities"][0]}
    assert np.abs(expected[1] - expected[2]).max() > 0.1  # the two versions are told apart
    body = {"inputs": {k: v.tolist() for k, v in inputs.items()}}

    server = ModelServer([ModelSpec("toy", str(base))],
                         ServerConfig(rest_port=0, grpc_port=None, poll_wait_seconds=0.1))
    server.start()
    url = f"{server.rest_url}/v1/models/toy:predict"
    stop = threading.Event()
    seen = [[] for _ in range(4)]
    failures = []

    def client(i):
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    r = session.post(url, json=body, timeout=30)
                except requests.RequestException as err:
                    failures.append(repr(err))
                    continue
                if r.status_code != 200:
                    failures.append(r.text)
                    continue
                probs = np.array(r.json()["outputs"]["probabilities"][0])
                match = [v for v, e in expected.items() if np.abs(probs - e).max() < 1e-5]
                seen[i].append(match[0] if match else None)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        _copy_version(staged, str(base / "2"))
        deadline = time.time() + 60
        while time.time() < deadline and not all(s and s[-1] == 2 for s in seen):
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        status = requests.get(f"{server.rest_url}/v1/models/toy").json()
        server.stop()

    assert failures == []
    for per_client in seen:
        assert None not in per_client
        assert per_client[0] == 1 and per_client[-1] == 2
        first_two = per_client.index(2)
        assert set(per_client[first_two:]) == {2}  # never back to the old version
    states = {s["version"]: s["state"] for s in status["model_version_status"]}
    assert states == {"2": "AVAILABLE", "1": "END"}


def test_config_file_policies_and_labels(tmp_path, toy_base_path):
    base = tmp_path / "multi"
    base.mkdir()
    toy_model.write_toy_saved_model(str(base / "1"), bias=0.0)
    toy_model.write_toy_saved_model(str(base / "2"), bias=4.0)
    config = tmp_path / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{
    name: "both"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "single" base_path: "{toy_base_path}" }}
}}
""")
    specs = read_model_config_file(str(config))
    assert [s.name for s in specs] == ["both", "single"]
    assert specs[0].policy == VersionPolicy("all")
    assert dict(specs[0].labels) == {"stable": 1, "canary": 2}

    inputs = toy_model.random_inputs(1, seed=6)
    body = {"inputs": {k: v.tolist() for k, v in inputs.items()}}
    with ModelServer(specs, ServerConfig(rest_port=0, grpc_port=None, poll_wait_seconds=0)) as server:
        def probs(tail):
            r = requests.post(f"{server.rest_url}/v1/models/{tail}:predict", json=body)
            assert r.status_code == 200, r.text
            return np.array(r.json()["outputs"]["probabilities"][0])

        v1 = toy_model.reference(inputs, 0.0)["probabilities"][0]
        v2 = toy_model.reference(inputs, 4.0)["probabilities"][0]
        np.testing.assert_allclose(probs("both"), v2, atol=1e-5)  # no version: the highest
        np.testing.assert_allclose(probs("both/versions/1"), v1, atol=1e-5)
        np.testing.assert_allclose(probs("both/labels/stable"), v1, atol=1e-5)
        np.testing.assert_allclose(probs("both/labels/canary"), v2, atol=1e-5)
        np.testing.assert_allclose(probs("single"), v1, atol=1e-5)
        status = requests.get(f"{server.rest_url}/v1/models/both").json()
        assert sorted(s["version"] for s in status["model_version_status"]) == ["1", "2"]


@pytest.mark.parametrize("text, message", [
    ("model_config_list { config { name: 'a' } }", "base_path"),
    ("model_config_list { config { base_path: '/x' } }", "name"),
    ("model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }", "platform"),
    ("model_config_list { }", "no model"),
    ("this is not a config", "text format"),
])
def test_bad_config_files_are_rejected(tmp_path, text, message):
    path = tmp_path / "bad.config"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        read_model_config_file(str(path))


def test_config_watcher_applies_changes_and_ignores_a_broken_file(tmp_path, toy_base_path):
    from vtcaps_tf.serving.config_file import ConfigFileWatcher
    from vtcaps_tf.serving.servables import ModelManager

    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "a" base_path: "{toy_base_path}" }} }}')
    specs = read_model_config_file(str(config))
    manager = ModelManager(specs, poll_wait_seconds=0, warmup=False).start()
    watcher = ConfigFileWatcher(str(config), manager, 60, specs)
    assert watcher.check() is False  # unchanged
    loaded = manager.get("a")
    config.write_text("model_config_list { config { name: ")  # half written
    assert watcher.check() is False
    assert manager.names == ["a"] and manager.get("a") is loaded
    config.write_text(f'model_config_list {{ config {{ name: "a" base_path: "{toy_base_path}" }}'
                      f' config {{ name: "b" base_path: "{toy_base_path}" }} }}')
    assert watcher.check() is True
    assert manager.names == ["a", "b"]
    assert manager.get("a") is loaded  # unchanged models keep their loaded version
    manager.stop()


# Run in a fresh process, so that `serve_until_stopped` has the main thread and its SIGTERM, and
# no other test's objects are around. Each Servable made is watched through a weak reference; the
# server's own poll collects an unloaded version's cycles, so the watcher only looks.
_SWAP_AND_WATCH = """
import json, os, shutil, signal, sys, threading, time, weakref
from vtcaps_tf.serving import servables
from vtcaps_tf.serving.server import ServerConfig, serve_until_stopped

base, copy = sys.argv[1], sys.argv[2]
made, alive, serving = [], [], threading.Event()
load = servables.Servable.__init__

def watched_load(self, *args, **kwargs):
    load(self, *args, **kwargs)
    made.append(weakref.ref(self))

servables.Servable.__init__ = watched_load

def versions_alive():
    return sorted(s.version for s in (ref() for ref in made) if s is not None)

def swap_then_stop():
    try:
        serving.wait(60)
        shutil.copytree(copy, os.path.join(base, "2"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and versions_alive() != [2]:
            time.sleep(0.2)
        alive.extend(versions_alive())
    finally:
        os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=swap_then_stop).start()
serve_until_stopped([servables.ModelSpec("toy", base)],
                    ServerConfig(rest_port=0, grpc_port=None, poll_wait_seconds=0.2),
                    lambda line: line.startswith("REST API at") and serving.set())
print(json.dumps(alive))
"""


@pytest.mark.slow  # a fresh process importing TensorFlow
def test_serve_frees_a_version_once_a_newer_one_replaces_it(tmp_path, toy_base_path):
    """`serve_until_stopped` itself holds no servable: after version 2 replaces version 1, no
    Servable of version 1 is left in the process (else each server would keep its first model
    for life, one model's memory more after the first hot swap)."""
    import json
    import subprocess
    import sys

    base = tmp_path / "toy"
    shutil.copytree(toy_base_path, base)
    shutil.copytree(base / "1", tmp_path / "staged")  # complete before it appears as version 2
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = subprocess.run([sys.executable, "-c", _SWAP_AND_WATCH, str(base), str(tmp_path / "staged")],
                         capture_output=True, text=True, timeout=300, cwd=repo,
                         env=dict(os.environ, PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="2"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == [2]
