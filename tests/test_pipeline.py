"""pseudo-labels end to end: resumable, atomic, identical under torchrun."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch

from wsss import cli, pipeline
from wsss.emojivoc import make_emojivoc
from wsss.voc import VOCLayout, read_mask


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    return make_emojivoc(tmp_path_factory.mktemp("voc") / "ev", train=5, val=1, seed=11, progress=False)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("test_glnet", num_classes=20)
    path = tmp_path_factory.mktemp("ck") / "tiny20.pth"
    torch.save({"model": model.state_dict(), "epoch": 0}, path)
    return path


def args(voc, ckpt, out, *extra):
    return ["-q", "pseudo-labels", "--voc-root", str(voc), "--split", "train", "--model", "test_glnet",
            "--checkpoint", str(ckpt), "--out", str(out), "--blocks", "2,4", "--scales", "1.0,0.5",
            "--max-side", "160", "--crf-iterations", "3", "--threads", "1", *extra]


def digest(folder):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def reference(tiny_voc, tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    assert cli.main(args(tiny_voc, tiny_ckpt, out, "--save-scores")) == 0
    return out


def test_writes_palette_pngs_for_every_id(reference, tiny_voc):
    layout = VOCLayout(tiny_voc)
    for image_id in layout.ids("train"):
        mask = read_mask(reference / f"{image_id}.png")
        assert mask.shape == read_mask(layout.mask(image_id)).shape
        labels = layout.image_labels([image_id])[image_id]
        allowed = {0} | {c + 1 for c in np.flatnonzero(labels)}
        assert set(np.unique(mask)) <= allowed  # only background and the image's classes
        scores = np.load(reference / "scores" / f"{image_id}.npz")
        assert list(scores["classes"]) == sorted(allowed - {0})


def test_interrupted_run_resumes_to_identical_output(reference, tiny_voc, tiny_ckpt, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = {"n": 0}
    save = pipeline.save_mask

    def flaky(path, mask):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # interrupted while writing the third image
        save(path, mask)

    monkeypatch.setattr(pipeline, "save_mask", flaky)
    with pytest.raises(KeyboardInterrupt):
        cli.main(args(tiny_voc, tiny_ckpt, out))
    assert len(list(out.glob("*.png"))) == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written file
    monkeypatch.setattr(pipeline, "save_mask", save)
    assert cli.main(args(tiny_voc, tiny_ckpt, out)) == 0
    assert digest(out) == digest(reference)


def test_score_counts_missing_predictions(reference, tiny_voc, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    first = sorted(reference.glob("*.png"))[0]
    (partial / first.name).write_bytes(first.read_bytes())
    code = cli.main(["score", "--pred", str(partial), "--voc-root", str(tiny_voc), "--split", "train",
                     "--json", str(tmp_path / "s.json")])
    assert code == 1
    assert "1 images scored, 4 listed ids without a prediction" in capsys.readouterr().out


def test_ground_truth_scores_100(tiny_voc, tmp_path, capsys):
    layout = VOCLayout(tiny_voc)
    assert cli.main(["score", "--pred", str(layout.mask_dir()), "--voc-root", str(tiny_voc), "--split", "train"]) == 0
    assert "mIoU            100.00" in capsys.readouterr().out


@pytest.mark.slow
def test_torchrun_two_processes_equal_single_process(reference, tiny_voc, tiny_ckpt, tmp_path):
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "wsss.cli", *args(tiny_voc, tiny_ckpt, out, "--save-scores")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert digest(out) == digest(reference)


def test_bad_slot_baseline_is_a_clear_error(tiny_voc, tiny_ckpt, tmp_path, capsys):
    assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--slot-baseline", "1.5")) == 2
    assert "slot_baseline=1.5" in capsys.readouterr().err
    assert not (tmp_path / "pl").exists() or not list((tmp_path / "pl").glob("*.png"))
