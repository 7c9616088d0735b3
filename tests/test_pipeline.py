"""pseudo-labels end to end: resumable, atomic, identical under torchrun."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch

from glmix_viz.untrusted import load_npz
from wsss import cli, pipeline
from wsss.emojivoc import make_emojivoc
from wsss.evidence import EvidenceConfig
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
            "--max-side", "160", "--crf-iterations", "3", "--threads", "1", "--workers", "0", *extra]


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
        scores = load_npz(reference / "scores" / f"{image_id}.npz")  # every array, without pickle
        assert list(scores["classes"]) == sorted(allowed - {0})


def test_interrupted_run_resumes_to_identical_output(reference, tiny_voc, tiny_ckpt, tmp_path, monkeypatch,
                                                     capsys):
    out = tmp_path / "out"
    calls = {"n": 0}
    save = pipeline.save_mask

    def flaky(path, mask):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # interrupted while writing the third image
        save(path, mask)

    monkeypatch.setattr(pipeline, "save_mask", flaky)
    assert cli.main(args(tiny_voc, tiny_ckpt, out)) == 130
    assert "interrupted after 2 of 5 images; rerun the same command to resume" in capsys.readouterr().err
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
    assert cli.main(["score", "--pred", str(layout.mask_dir()), "--voc-root", str(tiny_voc),
                     "--split", "train"]) == 0
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


def test_a_setting_for_a_stage_that_is_off_is_an_error(tiny_voc, tiny_ckpt, tmp_path, capsys):
    """--method cam turns the slots off: --blocks with it is named, not silently ignored."""
    assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--method", "cam")) == 2
    assert "--blocks 2,4, --method off: set, but the slots stage is off" in capsys.readouterr().err
    assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--no-crf", "--crf-iterations", "2")) == 2
    assert "--crf-iterations 2, --crf off: set, but the crf stage is off" in capsys.readouterr().err


def test_bad_slot_baseline_is_a_clear_error(tiny_voc, tiny_ckpt, tmp_path, capsys):
    assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--slot-baseline", "1.5")) == 2
    assert "glmix-wsss: error: --slot-baseline 1.5: expected a quantile in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "pl").exists() or not list((tmp_path / "pl").glob("*.png"))


def test_bad_region_margin_is_a_clear_error(tiny_voc, tiny_ckpt, tmp_path, capsys):
    for extra in ([], ["--region-relabel"]):
        assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--region-margin", "1.5", *extra)) == 2
        assert "--region-margin" in capsys.readouterr().err


def test_region_relabel_flag_reaches_the_pipeline(tiny_voc, tiny_ckpt, tmp_path, monkeypatch):
    from wsss import commands
    from wsss.regions import RegionParams

    seen = []
    monkeypatch.setattr(commands, "run_pseudo_labels", lambda *a, config, **k: seen.append(config.regions) or
                        {"written": 0, "skipped": 0, "failed": 0})
    for i, extra in enumerate(([], ["--region-relabel", "--region-margin", "0.4"])):
        cli.main(args(tiny_voc, tiny_ckpt, tmp_path / f"pl{i}", *extra))
    assert seen == [None, RegionParams(margin=0.4)]


def test_scale_weights_and_stitch_flags_reach_the_config(tiny_voc, tiny_ckpt, tmp_path, monkeypatch, capsys):
    from wsss import commands

    seen = []
    monkeypatch.setattr(commands, "run_pseudo_labels", lambda *a, config, **k: seen.append(config.evidence) or
                        {"written": 0, "skipped": 0, "failed": 0})
    assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--scale-weights", "1,2",
                         "--stitch", "1,4")) == 0
    assert (seen[0].scales, seen[0].weights, seen[0].stitch) == ((1.0, 0.5), (1.0, 2.0), (1, 4))
    for extra, flag in ((["--stitch", "1,3"], "--stitch"), (["--scale-weights", "1"], "--scale-weights"),
                        (["--stitch", "1,x"], "--stitch")):
        assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", *extra)) == 2
        assert flag in capsys.readouterr().err
    assert len(seen) == 1
    # without --scales: the default evidence (the fitted stitched one) or, with --method cam, the standard one
    plain = [a for a in args(tiny_voc, tiny_ckpt, tmp_path / "pl") if a not in ("--scales", "1.0,0.5")]
    default = pipeline.FITTED_EVIDENCE
    stitch = (1,) + (2,) * (len(default.scales) - 1)
    for extra in ([], ["--method", "cam"], ["--stitch", ",".join(map(str, stitch))], ["--scales", "1,0.8m"]):
        argv = [a for a in plain if a not in ("--blocks", "2,4")] if "cam" in extra else plain
        assert cli.main(argv + extra + ["--overwrite"]) == 0  # other settings into the same folder
    slots, cam, stitched, fitted = seen[1:]
    model_size = timm.create_model("test_glnet").pretrained_cfg["input_size"][-1]
    assert slots == replace(default, view_side=model_size)  # derived from the model (no training crops known)
    assert cam == pipeline.STANDARD_CAM == EvidenceConfig()
    assert (stitched.weights, stitched.stitch) == (default.weights, stitch)
    assert (fitted.scales, fitted.fit) == ((1.0, 0.8), (False, True))
    assert (fitted.weights, fitted.stitch) == (None, None)
    np.testing.assert_allclose(fitted.image_scales(100, 400), (1.0, 0.8 * model_size / 200))


def test_confident_labels_hand_worked():
    from wsss.refine import confident_labels

    high = np.array([[0, 3], [5, 0], [0, 2]])  # labels against the high background
    low = np.array([[0, 3], [5, 7], [2, 2]])  # against the low one: more foreground
    assert confident_labels(high, low).tolist() == [[0, 3], [5, 255], [255, 2]]


def test_confident_regions_combine_two_backgrounds(tiny_voc, tiny_ckpt, tmp_path, capsys):
    """--confident FG,BG equals labelling with constant backgrounds FG and BG and combining (IRN's rule)."""
    from glmix_viz.images import load_image
    from glmix_viz.models import load_checkpoint
    from wsss.evidence import ClassHead, EvidenceConfig
    from wsss.refine import BackgroundParams, ConfidentRegions, SlotRefineParams, confident_labels

    model = load_checkpoint(timm.create_model("test_glnet", num_classes=20), tiny_ckpt).eval()
    layout = VOCLayout(tiny_voc)
    image_id = layout.ids("train")[0]
    image = np.asarray(load_image(layout.image(image_id), max_side=160))
    classes = [c + 1 for c in np.flatnonzero(layout.image_labels([image_id])[image_id])]
    base = pipeline.PseudoLabelConfig(evidence=EvidenceConfig(scales=(1.0,)),
                                      slots=SlotRefineParams(blocks=(2, 4)),
                                      crf=None)

    def run(**kw):
        cfg = replace(base, **kw)
        return pipeline.pseudo_label_image(model, image, classes, ClassHead.from_model(model), cfg).mask

    got = run(background=ConfidentRegions(0.3, 0.05))
    want = confident_labels(run(background=BackgroundParams(threshold=0.3)),
                            run(background=BackgroundParams(threshold=0.05)))
    np.testing.assert_array_equal(got, want)
    assert (got == 255).any() and (got == 0).any()  # the case is not trivial

    out = tmp_path / "conf"
    assert cli.main(args(tiny_voc, tiny_ckpt, out, "--confident", "0.3,0.05")) == 0
    assert any(255 in np.unique(read_mask(p)) for p in out.glob("*.png"))
    for bad in ("0.05,0.3", "0.3"):
        assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "bad", "--confident", bad)) == 2
        assert "--confident" in capsys.readouterr().err


def test_labels_from_reaches_the_reader(tiny_voc, tiny_ckpt, tmp_path, capsys):
    """--labels-from xml on a layout without Annotations/ is an error naming the file expected."""
    assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--labels-from", "xml")) == 2
    assert "Annotations" in capsys.readouterr().err
    assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--labels-from", "masks", "--limit", "1")) == 0


def test_pipeline_from_evidence_equals_pipeline_from_model(tiny_voc, tiny_ckpt):
    """pseudo_label_image == evidence of config.capture_blocks() + pseudo_label_from_evidence, for every
    method; the blocks are derived in one place (for_model)."""
    from glmix_viz.images import load_image, normalize
    from glmix_viz.models import load_checkpoint
    from wsss.evidence import ClassHead, EvidenceConfig, compute_evidence
    from wsss.refine import SlotRefineParams
    from wsss.slot_classifier import SlotClassifierParams

    model = load_checkpoint(timm.create_model("test_glnet", num_classes=20), tiny_ckpt).eval()
    head = ClassHead.from_model(model)
    layout = VOCLayout(tiny_voc)
    image_id = layout.ids("train")[0]
    image = np.asarray(load_image(layout.image(image_id), max_side=160))
    classes = sorted(c + 1 for c in np.flatnonzero(layout.image_labels([image_id])[image_id]))
    base = pipeline.PseudoLabelConfig(evidence=EvidenceConfig(scales=(1.0,)),
                                      slots=SlotRefineParams(blocks=(2, 4)),
                                      crf=None, regions=None)  # relabelling needs the model: test_regions
    cases = {  # config -> the blocks its evidence must hold
        "default": (base, (1, 2, 3, 4)),  # the slot classifier uses every block
        "cam": (pipeline.PseudoLabelConfig.cam(evidence=base.evidence, crf=None), ()),
        "no classifier": (replace(base, classifier=None), (2, 4)),
        "classifier on 1": (replace(base, slots=SlotRefineParams(blocks=(4,)),
                                    classifier=SlotClassifierParams(blocks=(1,))), (1, 4)),
        "derived blocks": (replace(base, slots=SlotRefineParams(), classifier=None), (1, 2, 4)),  # of 4
    }
    every_block = compute_evidence(model, normalize(image), classes, head, base.evidence,
                                   slot_blocks=(1, 2, 3, 4))
    with torch.no_grad():
        for name, (cfg, blocks) in cases.items():
            resolved = cfg.for_model(model)
            assert resolved.capture_blocks() == blocks, name
            assert resolved.for_model(model) == resolved  # idempotent
            ev = compute_evidence(model, normalize(image), classes, head, cfg.evidence, slot_blocks=blocks)
            want = pipeline.pseudo_label_image(model, image, classes, head, cfg)
            got = pipeline.pseudo_label_from_evidence(image, ev, resolved)
            np.testing.assert_array_equal(got.mask, want.mask, err_msg=name)
            np.testing.assert_array_equal(got.scores, want.scores, err_msg=name)
            # extra blocks in the evidence change nothing: each step takes only its own blocks
            extra = pipeline.pseudo_label_from_evidence(image, every_block, resolved)
            np.testing.assert_array_equal(extra.mask, want.mask, err_msg=name)
    lacking = replace(every_block, slots=tuple(s for s in every_block.slots if s.ordinal != 4))
    with pytest.raises(ValueError, match=r"no slots of blocks \[4\]"):
        pipeline.class_scores(lacking, base.slots)
    with pytest.raises(ValueError, match="derived from the model: use config.for_model"):
        base.capture_blocks()  # the classifier's blocks: every block of a model not known yet
    with pytest.raises(ValueError, match="SlotRefineParams.blocks.*the model has 4 GLMix blocks"):
        replace(base, slots=SlotRefineParams(blocks=(2, 5))).for_model(model)


def test_named_model_without_weights_is_an_error(tiny_voc, tmp_path, monkeypatch, capsys):
    """pseudo-labels never swaps a named model for the demo; a missing --checkpoint is 'no such file'."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    base = ["-q", "pseudo-labels", "--voc-root", str(tiny_voc), "--split", "train",
            "--out", str(tmp_path / "pl")]
    assert cli.main([*base, "--model", "glnet_4g"]) == 2
    err = capsys.readouterr().err
    assert (f"expected {tmp_path / 'empty' / 'hub' / 'checkpoints' / 'glnet_4g.pth'}" in err
            and "--checkpoint" in err)
    assert cli.main([*base, "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert f"no such file: {tmp_path / 'nope.pth'}" in capsys.readouterr().err
    assert cli.main([*base, "--model", "glnet_typo"]) == 2  # a one-line error, not timm's traceback
    assert "--model 'glnet_typo' is not a GLNet" in capsys.readouterr().err
    assert not (tmp_path / "pl").exists() or not list((tmp_path / "pl").glob("*.png"))


def test_bad_out_and_thresholds_are_refused_before_work(reference, tiny_voc, tiny_ckpt, tmp_path, capsys):
    afile = tmp_path / "taken"
    afile.write_text("x")
    # --out is checked before the checkpoint
    assert cli.main(args(tiny_voc, tmp_path / "nope.pth", afile)) == 2
    assert capsys.readouterr().err.strip().startswith(f"glmix-wsss: error: --out {afile} "
                                                      "exists and is not a folder")
    score = ["score", "--voc-root", str(tiny_voc), "--split", "train", "--pred", str(reference), "--sweep-bg"]
    for bad in ("0.5:0.1:0.05", "", "0.1:0.5", "0.1:0.5:0", "0.1:x:0.1"):
        assert cli.main([*score, "--thresholds", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"glmix-wsss: error: --thresholds {bad!r}") and len(err.splitlines()) == 1, err
    assert cli.main([*score, "--thresholds", "0.1:0.3:0.1"]) == 0
    assert "bg threshold 0.300" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_rerun_completes(reference, tiny_voc, tiny_ckpt, tmp_path):
    """SIGINT to a running pseudo-labels: one line, exit 130, no traceback, no partial file; the rerun
    resumes."""
    from .conftest import interrupt_after_first_output

    out = tmp_path / "out"
    code, err = interrupt_after_first_output([sys.executable, "-m", "wsss.cli",
                                              *args(tiny_voc, tiny_ckpt, out)], out)
    assert code == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("images; rerun the same command to resume")
    assert 0 < len(list(out.glob("*.png"))) < 5 and not [p for p in out.iterdir() if p.name.startswith(".")]
    assert cli.main(args(tiny_voc, tiny_ckpt, out)) == 0
    assert digest(out) == digest(reference)


def test_manifest_records_the_run_and_guards_resumes(reference, tiny_voc, tiny_ckpt, tmp_path, capsys):
    """OUT/manifest.json holds model, checkpoint hash, labels and config; a rerun with other settings is
    refused (naming what differs) unless --overwrite, which redoes every mask."""
    import json

    from wsss.manifest import file_sha256

    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["model"] == "test_glnet" and manifest["checkpoint"] == str(tiny_ckpt)
    assert (manifest["checkpoint_sha256"] == file_sha256(tiny_ckpt)
            == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest())
    assert manifest["config"]["evidence.scales"] == [1.0, 0.5] and manifest["config"]["crf.iterations"] == 3
    assert manifest["labels"] == {"source": "auto", "file": None} and manifest["run"]["save_scores"] is True

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    # same settings: resumes (all there)
    assert cli.main(args(tiny_voc, tiny_ckpt, out, "--save-scores")) == 0
    assert cli.main(args(tiny_voc, tiny_ckpt, out, "--crf-iterations", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert "config.crf.iterations: 3 -> 2" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert digest(out) == digest(reference)  # nothing touched
    stale = sorted(out.glob("*.png"))[0]
    stale.write_bytes(b"stale")
    assert cli.main(args(tiny_voc, tiny_ckpt, out, "--save-scores", "--overwrite")) == 0
    assert digest(out) == digest(reference)  # every mask redone, the stale one included

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(stale, legacy / stale.name)
    assert cli.main(args(tiny_voc, tiny_ckpt, legacy)) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_progress_lines_when_not_a_terminal(tiny_voc, tiny_ckpt, tmp_path, monkeypatch, caplog):
    """Without a terminal (a log file), progress is logged with images/s and ETA, and a summary at the end."""
    import logging

    monkeypatch.setattr(pipeline, "LOG_EVERY_S", 0.0)  # the name wsss.pipeline uses
    caplog.set_level(logging.INFO)
    argv = [a for a in args(tiny_voc, tiny_ckpt, tmp_path / "pl") if a != "-q"]
    assert cli.main(argv) == 0
    lines = [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]
    assert any(line.startswith("2/5 images (2 written") and "ETA 0:" in line for line in lines), lines
    assert lines[-1].startswith("5/5 images (5 written, 0 skipped, 0 failed)") and "took 0:" in lines[-1]


def test_sweep_says_what_it_sweeps_and_flags_an_edge(reference, tiny_voc, capsys):
    score = ["score", "--voc-root", str(tiny_voc), "--split", "train", "--pred", str(reference), "--sweep-bg"]
    assert cli.main([*score, "--thresholds", "0.95:1.0:0.05"]) == 0
    out = capsys.readouterr().out
    assert "the saved scores, before the slot classifier and the CRF" in out
    best = float(out.split("best: threshold ")[1].split(",")[0])
    assert ("at the edge of the range" in out) == (best in (0.95, 1.0))
    assert cli.main([*score, "--thresholds", "0.0:1.0:0.05"]) == 0
    out = capsys.readouterr().out
    best = float(out.split("best: threshold ")[1].split(",")[0])
    assert ("at the edge of the range" in out) == (best in (0.0, 1.0))


def test_confident_regions_and_a_background_setting_are_not_both_taken(tiny_voc, tiny_ckpt, tmp_path, capsys):
    """--confident replaces the background score: with --bg-threshold too, an error names both flags; the
    config holds one or the other, never both."""
    from wsss.refine import ConfidentRegions

    assert pipeline.PseudoLabelConfig(background=ConfidentRegions(0.3, 0.05)).background == ConfidentRegions()
    with pytest.raises(ValueError, match="PseudoLabelConfig.background"):
        pipeline.PseudoLabelConfig(background=(0.3, 0.05))
    argv = args(tiny_voc, tiny_ckpt, tmp_path / "pl", "--confident", "0.3,0.05", "--bg-threshold", "0.4")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--confident replaces the background score: give it or --bg/--bg-threshold/--bg-power" in err


def test_saved_evidence_labels_again_as_the_model_would(reference, tiny_voc, tiny_ckpt, tmp_path, capsys):
    """--save-evidence keeps what the model computed; --from-evidence gives byte-identical masks at the same
    settings and at other later-stage settings, without the model; the CAM's settings cannot change."""
    run = tmp_path / "run"
    assert cli.main(args(tiny_voc, tiny_ckpt, run, "--save-evidence")) == 0
    assert digest(run) == digest(reference)  # saving changes nothing
    first = sorted((run / "evidence").glob("*.npz"))[0]
    ev = pipeline.read_evidence(first)
    again = tmp_path / "again.npz"
    pipeline.write_evidence(again, ev)
    back = pipeline.read_evidence(again)  # exact round trip, float32, no pickle
    assert back.classes == ev.classes and torch.equal(back.cams, ev.cams)
    assert [(s.ordinal, s.grid) for s in back.slots] == [(s.ordinal, s.grid) for s in ev.slots] == [
        (b, s.grid) for b, s in zip((1, 2, 3, 4), ev.slots)]  # every block: the classifier's
    assert all(torch.equal(a.logits, b.logits) for a, b in zip(back.slots, ev.slots))

    def from_evidence(out, *extra):
        argv = ["-q", "pseudo-labels", "--voc-root", str(tiny_voc), "--split", "train", "--from-evidence",
                str(run), "--out", str(out), "--threads", "1", *extra]
        return cli.main(argv)

    assert from_evidence(tmp_path / "same") == 0
    assert digest(tmp_path / "same") == digest(reference)
    assert from_evidence(tmp_path / "bg", "--bg-threshold", "0.4", "--slot-mix", "0.8") == 0
    assert cli.main(args(tiny_voc, tiny_ckpt, tmp_path / "bg_direct", "--bg-threshold", "0.4", "--slot-mix",
                         "0.8")) == 0
    assert digest(tmp_path / "bg") == digest(tmp_path / "bg_direct")
    assert digest(tmp_path / "bg") != digest(reference)  # the settings did change the masks
    for extra, message in ((["--scales", "1"], "--scales: the evidence in"),
                           (["--region-relabel"], "--region-relabel needs the model"),
                           (["--max-side", "96"], "--max-side 96: the evidence was computed at --max-side"),
                           (["--precision", "bfloat16"], "--precision bfloat16: the evidence was computed at "
                            "--precision float32")):
        assert from_evidence(tmp_path / "bad", *extra) == 2
        assert message in capsys.readouterr().err
    assert from_evidence(tmp_path / "bad2", "--from-evidence", str(reference)) == 2  # saved no evidence
    assert "rerun it with --save-evidence" in capsys.readouterr().err
    slim = tmp_path / "slim"
    assert cli.main(args(tiny_voc, tiny_ckpt, slim, "--save-evidence", "--no-slot-classifier")) == 0
    assert from_evidence(tmp_path / "b3", "--from-evidence", str(slim), "--blocks", "3") == 2
    assert "need the slots of blocks [3], the evidence holds [2, 4]" in capsys.readouterr().err
