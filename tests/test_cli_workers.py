"""glmix-viz --workers N: the same files as rendering in this process; failures and Ctrl-C."""
from __future__ import annotations

import hashlib
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glmix_viz import cli
from glmix_viz._pool import PoolStartError, WorkerPool, usable_cores

from .conftest import alive_after as _alive
from .conftest import sigint_default
from .test_cli import _tiny_argv, tiny_ckpt  # noqa: F401  (fixture)


def digest(folder: Path) -> dict:
    """SHA-1 of every file in ``folder`` (temporary ``.NAME.*`` files included)."""
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def folder(tmp_path) -> Path:
    """Five images, three sizes (with --resize whole: three input shapes, so batches split)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(96, 128), (96, 128), (120, 90), (64, 64), (96, 128)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def run_both(argv: list, out: Path, workers: int = 2) -> tuple:
    """``glmix-viz`` with ``--workers 0`` (into ``out/w0``) and ``--workers N`` (``out/wN``), the model at the
    same torch thread count in both (the workers leave it ``usable_cores() - N``; a different count may
    change the maps at float rounding). Returns the two exit codes and folders."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(1, usable_cores() - workers))
        code0 = cli.main([*argv, "--out", str(out / "w0"), "--workers", "0"])
        code = cli.main([*argv, "--out", str(out / f"w{workers}"), "--workers", str(workers)])
        assert torch.get_num_threads() == max(1, usable_cores() - workers)  # restored after the run
    finally:
        torch.set_num_threads(threads)
    return code0, code, out / "w0", out / f"w{workers}"


def test_two_workers_write_the_same_bytes(folder, tiny_ckpt, tmp_path):  # noqa: F811
    """Fig. 4 PNGs of two blocks and the --save-maps .npz, batches of mixed sizes: byte-identical."""
    argv = [str(folder), *_tiny_argv(tiny_ckpt), "--block", "2,4", "--save-maps", "--resize", "whole",
            "--batch-size", "2"]
    code0, code2, w0, w2 = run_both(argv, tmp_path)
    assert (code0, code2) == (0, 0)
    want = digest(w0)
    assert len(want) == 15 and not [n for n in want if n.startswith(".")]  # 10 PNGs, 5 .npz
    assert digest(w2) == want


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--figure", "depths", "--format", "pdf"], ["--figure", "hard"]],
                         ids=["depths-pdf", "hard-png"])
def test_two_workers_write_the_same_bytes_for_every_figure(folder, tiny_ckpt, tmp_path,  # noqa: F811
                                                           monkeypatch, extra):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # matplotlib's PDF CreationDate (the workers inherit it)
    code0, code2, w0, w2 = run_both([str(folder), *_tiny_argv(tiny_ckpt), *extra], tmp_path)
    assert (code0, code2) == (0, 0)
    want = digest(w0)
    assert len(want) == 5
    assert digest(w2) == want


def test_a_failing_image_in_a_worker_is_counted_and_the_run_goes_on(folder, tiny_ckpt,  # noqa: F811
                                                                    tmp_path, caplog):
    """An image whose figure cannot be written (a folder holds its name) fails in its worker, logged by
    name; the others are written as with --workers 0; the summary counts it; the exit status is 1."""
    caplog.set_level(logging.INFO)
    argv = [str(folder), *_tiny_argv(tiny_ckpt), "--save-maps"]
    for sub in ("w0", "w2"):
        (tmp_path / sub / "im1_b04_fig4.png").mkdir(parents=True)
    code0, code2, w0, w2 = run_both(argv, tmp_path)
    assert (code0, code2) == (1, 1)
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("failed on ")]
    assert len(failed) == 2 and all(m.startswith(f"failed on {folder / 'im1.png'}: ") for m in failed), failed
    assert "IsADirectoryError" in failed[1]  # the worker's error, with its type
    summaries = [r.getMessage() for r in caplog.records if " written for " in r.getMessage()]
    summary = "4 figures written for 4 images (0 skipped, 1 failed)"
    assert [m.split(" -> ")[0] for m in summaries] == [summary] * 2
    want = digest(w0)
    assert len(want) == 8 and "im1.npz" not in want  # 4 PNGs, 4 .npz; no temporary file
    assert digest(w2) == want


def test_bad_workers_flag(folder, tiny_ckpt, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as err:
        cli.main([str(folder), *_tiny_argv(tiny_ckpt), "--workers", "-1"])
    assert err.value.code == 2
    assert "--workers must be 0 (this process) or more, got -1" in capsys.readouterr().err


def _cannot_start() -> None:
    raise ImportError("no such module")


def _nothing(state, payload) -> None:
    pass


def test_a_worker_that_cannot_start_stops_the_pool():
    """A failing ``init`` is an error of the run (glmix-viz: one line naming --workers), not of an image."""
    pool = WorkerPool(1, _cannot_start, (), _nothing)
    with pytest.raises(PoolStartError, match=r"a worker process could not start \(exit code 1\)"):
        pool.submit(0, None)
        pool.wait_all()
    assert not any(pool.pids().values())


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_leaves_no_partial_file(tmp_path, tiny_ckpt):  # noqa: F811
    """SIGINT to a 2-worker run: exit 130 with one line, no traceback, no worker process left, no temporary
    file; every file written is complete."""
    import psutil

    many = tmp_path / "many"
    many.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(many / f"img{i:02d}.png")
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "glmix_viz.cli", str(many), *_tiny_argv(tiny_ckpt),
                             "--batch-size", "1", "--save-maps", "--workers", "2", "--out", str(out)],
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    deadline, children = time.time() + 300, set()
    while proc.poll() is None and time.time() < deadline and not [
            p for p in out.glob("*.png") if not p.name.startswith(".")]:
        children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        time.sleep(0.02)
    children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("glmix-viz: interrupted after ")
    assert len(children) >= 2  # the workers (and multiprocessing's resource tracker)
    assert not _alive(children)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written file
    written = sorted(out.glob("*.png"))
    assert 0 < len(written) < 60, "interrupted too late to test anything"
    for p in written:
        with Image.open(p) as im:
            im.load()  # complete files only
    for p in out.glob("*.npz"):
        with np.load(p) as npz:
            assert npz["b04_dispatch"].shape[0] > 0
