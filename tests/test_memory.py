"""Freed memory kept for reuse (glmix_viz.memory): page faults counted, in fresh processes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from glmix_viz._pool import WorkerPool

# Allocates and frees two 24 MiB blocks ten times (a forward's activations), after one warm-up round,
# and prints the minor page faults of those ten rounds.
_FAULTS = """
import resource, sys
import numpy as np
from glmix_viz.memory import reuse_freed_memory
reused = reuse_freed_memory()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        a = np.ones(6 << 20, np.float32)
        b = np.ones(6 << 20, np.float32)
        del a, b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(reused, faults())
"""


def _faults(**env) -> tuple:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLMIX_REUSE"))}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env={**environ, **env}, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"), reason="glibc's malloc")
def test_freed_memory_is_reused_without_page_faults():
    """glibc's defaults give back and fault in again the blocks of every round (thousands of faults);
    with the thresholds raised the rounds reuse the heap: no page is faulted in again."""
    reused, faults = _faults()
    left, system = _faults(GLMIX_REUSE_MEMORY="0")
    assert reused and not left
    assert system > 5000, system  # 240 MiB of first writes: ~60,000 pages (fewer if huge)
    assert faults < 50, faults


@pytest.mark.parametrize("env", [{"GLMIX_REUSE_MEMORY": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_the_users_malloc_settings_win(env):
    assert _faults(**env)[0] is False


def _ask(state, payload):
    from glmix_viz import memory

    return memory._applied


def test_pool_workers_reuse_freed_memory():
    """Every worker of the pool (figures, evaluate, pseudo-labels) raises the thresholds at start."""
    glibc = os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    expected = glibc and not any(k.startswith(("MALLOC_", "GLMIX_REUSE")) for k in os.environ)
    with WorkerPool(1, dict, (), _ask) as pool:
        pool.submit("a", None)
        assert pool.wait_all() == [("a", None)]
        assert pool.pop_value("a") is expected
