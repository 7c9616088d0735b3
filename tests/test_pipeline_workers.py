"""pseudo-labels --workers N: the same files as one image after the other; failures, crashes and Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss import cli, pipeline
from wsss._workers import WorkerPool

from .conftest import alive_after as _alive
from .conftest import sigint_default
from .test_pipeline import args, tiny_ckpt, tiny_voc  # noqa: F401  (fixtures)


def digest_all(folder: Path) -> dict:
    """SHA-1 of every file but the manifest: PNGs, scores/*.npz, evidence/*.npz."""
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}


@pytest.fixture(scope="module")
def sequential(tiny_voc, tiny_ckpt, tmp_path_factory):  # noqa: F811
    """One image after the other, two torch threads."""
    out = tmp_path_factory.mktemp("seq")
    argv = args(tiny_voc, tiny_ckpt, out, "--save-scores", "--save-evidence", "--workers", "0")
    argv[argv.index("--threads") + 1] = "2"
    assert cli.main(argv) == 0
    return out


def test_two_workers_write_the_same_bytes(sequential, tiny_voc, tiny_ckpt, tmp_path):  # noqa: F811
    """Two workers running the model on one thread each write PNGs, scores and evidence byte-identical to
    --workers 0 on two threads; the manifest differs only in run.workers, so either resumes the other's
    folder."""
    out = tmp_path / "w2"
    assert cli.main(args(tiny_voc, tiny_ckpt, out, "--save-scores", "--save-evidence", "--workers", "2")) == 0
    want = digest_all(sequential)
    assert len(want) == 15  # 5 PNGs, 5 scores, 5 evidence files
    assert digest_all(out) == want
    old, new = (json.loads((d / "manifest.json").read_text()) for d in (sequential, out))
    assert (old["run"]["workers"], new["run"]["workers"]) == (0, 2)
    del old["run"]["workers"], new["run"]["workers"]
    assert old == new
    # a rerun with another worker count resumes (all there: nothing rewritten)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert cli.main(args(tiny_voc, tiny_ckpt, out, "--save-scores", "--save-evidence", "--workers", "0")) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before


def test_the_gpu_layout_writes_the_same_bytes(sequential, tiny_voc, tiny_ckpt, tmp_path,  # noqa: F811
                                              monkeypatch):
    """The layout of a GPU run, here on the CPU: this process computes the evidence and hands it to two
    post-processing workers (packed as arrays); PNGs, scores and evidence equal --workers 0's."""
    from wsss import commands

    real, seen = commands.run_pseudo_labels, []
    monkeypatch.setattr(commands, "run_pseudo_labels", lambda *a, **k: seen.append(k["workers"]) or
                        real(*a, **k, model_in_workers=False))
    out = tmp_path / "gpu-layout"
    assert cli.main(args(tiny_voc, tiny_ckpt, out, "--save-scores", "--save-evidence", "--workers", "2")) == 0
    assert seen == [2]
    assert digest_all(out) == digest_all(sequential)
    with pytest.raises(ValueError, match="model_in_workers=True needs the model on the CPU"):
        pipeline.run_pseudo_labels(None, None, [], {}, tmp_path / "x", head=None, device=torch.device("cuda"),
                                   workers=2, model_in_workers=True)


def test_region_relabelling_runs_in_the_workers(tiny_voc, tiny_ckpt, tmp_path):  # noqa: F811
    """With the model on the CPU the workers hold it, so region relabelling (which needs it) runs there:
    the same PNGs as one image after the other."""
    seq, par = tmp_path / "seq", tmp_path / "w2"
    assert cli.main(args(tiny_voc, tiny_ckpt, seq, "--region-relabel", "--workers", "0")) == 0
    assert cli.main(args(tiny_voc, tiny_ckpt, par, "--region-relabel", "--workers", "2")) == 0
    assert len(digest_all(seq)) == 5 and digest_all(par) == digest_all(seq)
    assert json.loads((par / "manifest.json").read_text())["run"]["workers"] == 2

def test_a_failing_image_is_counted_and_the_run_goes_on(sequential, tiny_voc, tmp_path, caplog):  # noqa: F811
    """An image whose post-processing raises in a worker (its evidence file is corrupt) is failed, logged
    by name; the others are written as --workers 0 writes them; the exit status is 1."""
    import logging
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sequential, run)
    broken = sorted((run / "evidence").glob("*.npz"))[1]
    broken.write_bytes(b"not an npz")
    caplog.set_level(logging.INFO)
    out = tmp_path / "again"
    argv = ["pseudo-labels", "--voc-root", str(tiny_voc), "--split", "train", "--from-evidence", str(run),
            "--out", str(out), "--threads", "1", "--workers", "2"]
    assert cli.main(argv) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"failed {broken.stem}: ") for m in messages), messages
    assert any(m.startswith("4 written, 0 skipped (already there), 1 failed") for m in messages), messages
    want = {k: v for k, v in digest_all(sequential).items() if k.endswith(".png") and broken.stem not in k}
    assert digest_all(out) == want
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _init(folder: str) -> Path:
    pipeline._worker_init(None, None, 1)
    return Path(folder)


def _task(folder: Path, item: int) -> None:
    if item == 3:
        raise ValueError("three is bad")
    if item == 5:
        os._exit(7)  # a crash: no exception, no cleanup
    (folder / f"{item}.txt").write_text(f"{torch.get_num_threads()} {os.getpid()}")


def test_worker_pool_survives_a_failing_and_a_dying_task(tmp_path):
    """A task that raises fails alone; a worker that dies fails the task it ran and is replaced, its queued
    task goes to another; at most workers x per_worker tasks are in flight; workers run one torch thread."""
    results, most = {}, 0
    with WorkerPool(2, _init, (str(tmp_path),), _task, per_worker=2) as pool:
        first = set(pool.pids())
        for item in range(10):
            pool.submit(item, item)
            most = max(most, pool.in_flight)
            results.update(pool.results())
        results.update(pool.wait_all())
        assert pool.in_flight == 0
        now = set(pool.pids())
    assert most == 4
    assert sorted(results) == list(range(10))
    assert results[3] == "ValueError: three is bad"
    assert results[5] == "the worker process died (exit code 7)"
    assert all(results[i] is None for i in range(10) if i not in (3, 5))
    written = {int(p.stem): p.read_text().split() for p in tmp_path.glob("*.txt")}
    assert sorted(written) == [0, 1, 2, 4, 6, 7, 8, 9]
    assert {threads for threads, _ in written.values()} == {"1"}
    assert len(now - first) == 1  # the dead worker was replaced
    assert {int(pid) for _, pid in written.values()} <= first | now
    assert not _alive(first | now)  # leaving the with stopped every worker


def test_default_workers():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    plenty = 1 << 40
    assert [pipeline.default_workers(cpu, n, memory=plenty) for n in (1, 2, 3, 4, 8, 16, 64)] == \
        [0, 2, 3, 4, 8, 8, 8]
    gib = 1 << 30  # a worker running the model is planned at 2 GiB; one worker alone is no gain: 0
    assert [pipeline.default_workers(cpu, 8, memory=m * gib) for m in (3, 4, 7, 100)] == [0, 2, 3, 8]
    assert pipeline.default_workers(cpu, 8, memory=None) == 8  # memory unknown: no limit
    assert pipeline.available_memory() is None or pipeline.available_memory() > 0
    assert [pipeline.default_workers(gpu, n) for n in (1, 2, 3, 4, 16)] == [0, 1, 2, 3, 8]
    assert pipeline.default_workers(cpu, 8, model=False) == 7  # --from-evidence: all post-processing
    assert pipeline.usable_cores() == len(os.sched_getaffinity(0))


def test_bad_workers_flag(tiny_voc, tiny_ckpt, tmp_path, capsys):  # noqa: F811
    assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--workers", "-1")) == 2
    assert "--workers -1: expected 0 (one image after the other) or more" in capsys.readouterr().err


def _start_and_wait_for_a_png(argv, out: Path):
    """Start pseudo-labels; return the process and its children's pids once a first PNG is in ``out``."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "wsss.cli", *argv], stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_default)
    deadline, children = time.time() + 300, set()
    while proc.poll() is None and time.time() < deadline and not [
            p for p in out.glob("*.png") if not p.name.startswith(".")]:
        children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        time.sleep(0.02)
    children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    return proc, children


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_workers_and_the_rerun_completes(sequential, tiny_voc, tiny_ckpt, tmp_path,  # noqa: F811
                                                          signum):
    """SIGINT (Ctrl-C) or SIGTERM (a batch scheduler's time limit) to a running 2-worker run: exit 130 with
    one line, no traceback, no partial file, no worker process left; the rerun completes to the same
    bytes."""
    out = tmp_path / "out"
    argv = args(tiny_voc, tiny_ckpt, out, "--save-scores", "--save-evidence", "--workers", "2")
    proc, children = _start_and_wait_for_a_png(argv, out)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("images; rerun the same command to resume")
    assert len(children) >= 2  # the workers (and multiprocessing's resource tracker)
    assert not _alive(children)
    pngs = list(out.glob("*.png"))
    assert 0 < len(pngs) < 5, "interrupted too late to test anything"
    assert not [p for p in out.rglob(".*")]  # no half-written file anywhere
    assert cli.main(argv) == 0
    assert digest_all(out) == digest_all(sequential)
    assert np.all([p.stat().st_size > 0 for p in out.rglob("*.png")])


_KILLED_PARENT = """
import sys, time
from glmix_viz._pool import WorkerPool

def init():
    return None

def task(state, seconds):
    time.sleep(seconds)

if __name__ == "__main__":
    with WorkerPool(2, init, (), task) as pool:
        pool.submit(0, 120)
        pool.submit(1, 120)
        while not all(w.ready for w in pool._workers):
            pool.results(timeout=0.1)
        time.sleep(0.5)  # both tasks running
        print(" ".join(str(pid) for pid in pool.pids()), flush=True)
        time.sleep(300)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_of_a_killed_parent_stop_at_once(tmp_path):
    """SIGKILL to the pool's process (nothing of it runs): the kernel sends its workers SIGTERM, so they stop
    in the middle of their 120 s tasks, within seconds."""
    script = tmp_path / "parent.py"
    script.write_text(_KILLED_PARENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    workers = [int(pid) for pid in proc.stdout.readline().split()]
    assert len(workers) == 2 and not set(workers) - set(_alive(workers, wait_s=0))
    proc.kill()
    proc.communicate(timeout=60)
    assert not _alive(workers, wait_s=5.0)


def test_workers_flag_and_threads_reach_the_run(tiny_voc, tiny_ckpt, tmp_path, monkeypatch):  # noqa: F811
    """--workers reaches run_pseudo_labels; with the model on the CPU the workers run it, on the cores shared
    out (or --threads each) while this process keeps one thread; region relabelling runs there too."""
    from wsss import commands

    seen = []
    monkeypatch.setattr(commands, "run_pseudo_labels", lambda *a, workers, worker_threads, **k: seen.append(
        (workers, worker_threads, torch.get_num_threads())) or {"written": 0, "skipped": 0, "failed": 0})
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 8)
    monkeypatch.setattr(pipeline, "available_memory", lambda: 1 << 40)
    threads = torch.get_num_threads()
    try:
        plain = args(tiny_voc, tiny_ckpt, tmp_path / "pl")
        for flag in ("--threads", "--workers"):  # unset: the defaults
            del plain[plain.index(flag):plain.index(flag) + 2]
        for extra in (["--workers", "3"], ["--workers", "3", "--threads", "2"],
                      ["--workers", "0", "--threads", "3"], ["--workers", "9"], [], ["--region-relabel"]):
            assert cli.main(plain + extra + ["--overwrite", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert seen == [(3, 2, 1), (3, 2, 1), (0, None, 3), (9, 1, 1), (8, 1, 1), (8, 1, 1)]


def test_on_a_gpu_this_process_runs_the_model_and_the_workers_post_process(monkeypatch):
    """The GPU layout's threads: cores - 1 single-threaded workers (at most 8), the model stage the core
    they leave; --threads sets the model stage's; region relabelling keeps the model here: 0 workers."""
    import argparse

    from wsss import commands
    from wsss.pipeline import PseudoLabelConfig
    from wsss.regions import RegionParams

    monkeypatch.setattr(pipeline, "usable_cores", lambda: 8)
    gpu, threads = torch.device("cuda"), torch.get_num_threads()
    plain, relabel = PseudoLabelConfig(), PseudoLabelConfig(regions=RegionParams())
    try:
        seen = [(commands._workers(argparse.Namespace(workers=w, threads=t), gpu, 1, c, True),
                 torch.get_num_threads()) for w, t, c in ((None, 0, plain), (3, 0, plain), (3, 2, plain),
                                                          (None, 0, relabel))]
    finally:
        torch.set_num_threads(threads)
    assert seen[:3] == [((7, None), 1), ((3, None), 5), ((3, None), 2)]
    assert seen[3][0] == (0, None)
