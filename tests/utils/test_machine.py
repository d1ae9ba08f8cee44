"""The machine-speed figure: OpenBLAS' kernel choice is read, and a generic fallback is not taken
for the machine's speed."""

import os
import subprocess
import sys

import pytest

from vtcaps_tf.utils import machine

AVX512 = frozenset({"sse3", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
AVX2 = frozenset({"sse3", "avx", "avx2", "fma"})


@pytest.mark.parametrize("core, flags, expected", [
    ("Prescott", AVX512, "SkylakeX"),  # OpenBLAS 0.3.23 on a Xeon model it does not know
    ("Prescott", AVX2, "Haswell"),
    ("Nehalem", frozenset({"sse3", "avx"}), "Sandybridge"),
    ("Prescott", frozenset({"sse3", "ssse3"}), None),  # nothing better to use
    ("SkylakeX", AVX512, None),  # already the CPU's own kernels
    ("Haswell", AVX512, None),  # a specific choice stands
    ("Zen", AVX2, None),
    (None, AVX512, None),  # no OpenBLAS to ask
])
def test_fitting_core(core, flags, expected):
    assert machine.fitting_core(core, flags) == expected


def test_blas_core_reports_the_kernels_openblas_runs():
    # OPENBLAS_CORETYPE forces OpenBLAS' kernel set, so a child with it set must report that set.
    code = "from vtcaps_tf.utils import machine; print(machine.blas_core())"
    for core in ("Haswell", "Prescott"):
        env = dict(os.environ, OPENBLAS_CORETYPE=core)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == core


def test_a_generic_fallback_is_measured_again_with_the_cpus_kernels(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setattr(machine, "blas_core", lambda: "Prescott")
    monkeypatch.setattr(machine, "cpu_flags", lambda: AVX2)

    def in_process(n, repeats):
        raise AssertionError("measured in this process, with the generic kernels")

    monkeypatch.setattr(machine, "_measure", in_process)
    assert machine.matmul_gflops(n=256, repeats=2) > 0  # so the child process measured it
    assert "Haswell" in machine.describe() and "Prescott" in machine.describe()


def test_the_cpus_own_kernels_are_measured_in_process(monkeypatch):
    monkeypatch.setattr(machine, "blas_core", lambda: "SkylakeX")
    calls = []
    monkeypatch.setattr(machine, "_measure", lambda n, repeats: calls.append((n, repeats)) or 1.0)
    assert machine.matmul_gflops(n=256, repeats=2) == 1.0 and calls == [(256, 2)]
    assert machine.describe() == "OpenBLAS SkylakeX kernels"
