"""The environment every `vtcaps` command runs TensorFlow in, set before TensorFlow loads.

`tensorflow_defaults()` applies TENSORFLOW_DEFAULTS; `quiet_tensorflow()` keeps TensorFlow's
start-up chatter (CUDA plugin registration, absl's pre-initialisation notes) off stderr while
other stderr output passes unchanged. Both leave settings the user made alone. Imports no
TensorFlow (tests/conftest.py and benchmarks use it before TensorFlow loads).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Environment every command runs TensorFlow with; the user's own settings win. oneDNN kernels:
# TensorFlow turns them on by default only on CPUs with AVX-512 or AMX; on the AVX2 machines this
# project is measured on they make a `tiny` training step faster (`benchmarks/train_step.py`,
# BUILD.md), and every test passes with them.
TENSORFLOW_DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "1"}

# Lines TensorFlow's native libraries print while `import tensorflow` registers its CUDA plugins.
# TF_CPP_MIN_LOG_LEVEL does not reach the absl lines logged before absl::InitializeLog.
_STARTUP_NOISE = re.compile(
    r"Unable to register (cuFFT|cuDNN|cuBLAS) factory"
    r"|computation placer already registered"
    r"|All log messages before absl::InitializeLog\(\) is called"
    r"|Could not find cuda drivers on your machine"
    r"|cpu_feature_guard\.cc|rebuild TensorFlow with the appropriate compiler flags")


def tensorflow_defaults() -> None:
    """Apply TENSORFLOW_DEFAULTS where the environment does not set them (before TF loads)."""
    for key, value in TENSORFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def _filtered_stderr():
    """Send file descriptor 2 to a temporary file, then copy it back without `_STARTUP_NOISE`.

    At the descriptor level because the noise comes from C++, not from Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [ln for ln in text.splitlines(keepends=True) if not _STARTUP_NOISE.search(ln)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader with stderr filtered; everything else is the wrapped loader's."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _filtered_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Filters stderr while `tensorflow` is first imported, whichever module imports it, whenever."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and so that find_spec below finds the real one
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up log lines off stderr; the user's own settings win."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # 3: also the E-level plugin-factory lines
    try:
        from absl import logging as absl_logging
    except ImportError:
        absl_logging = None
    if absl_logging is not None and absl_logging.get_verbosity() == absl_logging.WARNING:  # the default
        absl_logging.set_verbosity(absl_logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport)
                                                   for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
