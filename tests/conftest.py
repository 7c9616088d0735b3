"""Shared fixtures. Matplotlib uses the Agg backend; reference data lives in tests/data."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
import torch

import glmix_viz  # noqa: F401  (registers the models with timm)

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "reference"
FIXTURES = ("tiny_stl", "tiny_stl_paramslot", "tiny_4g", "tiny_4g_tklb")


_CONFIG: list = []


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG[:] = [config]


def active_pytest_config() -> pytest.Config:
    """This run's pytest config (tests/test_timm_suite.py registers timm's markers on it)."""
    return _CONFIG[0]


@pytest.fixture(scope="session")
def official() -> dict:
    """Facts about the official release: keys, shapes, params, GLMix block names per model."""
    return json.loads((REFERENCE / "glnet_official_state_dicts.json").read_text())


def load_fixture(name: str) -> dict:
    return torch.load(REFERENCE / f"{name}.pt", weights_only=False)


@pytest.fixture
def seed() -> int:
    torch.manual_seed(0)
    np.random.seed(0)
    return 0


@pytest.fixture
def tiny_model():
    """A tiny GLNet (test_glnet, 4 GLMix blocks) with the tiny_stl fixture's weights, in eval mode."""
    import timm

    fx = load_fixture("tiny_stl")
    model = timm.create_model("test_glnet", num_classes=10)
    model.load_state_dict(fx["state_dict"])
    return model.eval()


@pytest.fixture(autouse=True)
def _seeded():
    """Each test starts from the same random state, whatever ran before it."""
    torch.manual_seed(0)
    np.random.seed(0)


def sigint_default() -> None:
    """``preexec_fn`` of a child that must take Ctrl-C: SIGINT back to its default. A shell starts
    background jobs (``pytest ... &``) with SIGINT ignored, and children inherit that."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_after_first_output(cmd, out: Path, *, timeout: float = 300.0):
    """Run ``cmd``, send it SIGINT once a finished PNG is in ``out`` (not an atomic write's temporary one).

    Returns:
        ``(return code, stderr)``.
    """
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline and not [
        p for p in out.glob("*.png") if not p.name.startswith(".")
    ]:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def alive_after(pids, wait_s: float = 5.0) -> list:
    """The pids still running (not gone, not a zombie) after up to ``wait_s`` s."""
    import time

    import psutil

    deadline = time.time() + wait_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.1)
