"""Pipeline settings: defaults, a checkpoint's preset, flags, and what is derived from the model."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch

from glmix_viz.models import load_checkpoint
from glmix_viz.models.demo import load_demo_model
from wsss import cli
from wsss.emojivoc import make_emojivoc
from wsss.evidence import EvidenceConfig
from wsss.pipeline import FITTED_EVIDENCE, STANDARD_CAM, PseudoLabelConfig
from wsss.presets import flatten, make_preset, resolve_settings, unflatten
from wsss.refine import BackgroundParams, ConfidentRegions, SlotRefineParams


@pytest.mark.parametrize("n, blocks", [(10, (2, 5, 10)), (17, (3, 9, 17)), (4, (1, 2, 4)), (2, (1, 2)),
                                       (1, (1,))])
def test_derived_blocks_hand_worked(n, blocks):
    """0.2, 0.5 and 1 of the depth, rounded half up: 17 * 0.5 = 8.5 -> 9; 4 * 0.2 = 0.8 -> 1."""
    assert SlotRefineParams.derived_blocks(n) == blocks


def test_fitted_scales_hand_worked():
    """A fitted scale resizes the image so that its area is view_side squared (times the scale squared)."""
    ev = replace(FITTED_EVIDENCE, view_side=192)
    scales = ev.image_scales(300, 480)  # sqrt(300 * 480) = 379.47
    np.testing.assert_allclose(scales, (1.0, 192 / 379.4733, 0.75 * 192 / 379.4733), rtol=1e-5)
    assert EvidenceConfig().image_scales(300, 480) == EvidenceConfig().scales  # nothing fitted
    with pytest.raises(ValueError, match="EvidenceConfig.view_side"):
        FITTED_EVIDENCE.image_scales(300, 480)  # not derived from a model yet


@pytest.mark.parametrize("config", [
    PseudoLabelConfig(),
    PseudoLabelConfig.cam(),
    PseudoLabelConfig(background=ConfidentRegions(0.3, 0.05), crf=None, classifier=None),
    PseudoLabelConfig(evidence=EvidenceConfig(scales=(1.0, 0.5), weights=(1.0, 2.0), stitch=(1, 4)),
                      slots=SlotRefineParams(blocks=(2, 5), mix=0.3)),
])
def test_flat_settings_round_trip_through_json(config):
    flat = json.loads(json.dumps(flatten(config)))
    assert unflatten(flat) == config


def test_demo_checkpoint_carries_its_preset_and_the_rest_get_defaults():
    demo, _ = load_demo_model()
    resolved = resolve_settings(demo)
    assert resolved.preset == "glnet_demo-emojivoc"
    cfg = resolved.config
    assert (cfg.evidence.scales, cfg.evidence.weights, cfg.evidence.stitch) == ((1.0, 0.5, 0.375), (1, 2, 1),
                                                                                (1, 4, 4))
    assert not cfg.evidence.fitted and cfg.slots.blocks == (2, 5, 10)
    assert cfg.background == BackgroundParams("constant", 0.25)
    assert cfg.classifier.blocks == tuple(range(1, 11))
    assert resolved.sources["slots.mix"] == "preset glnet_demo-emojivoc"
    assert resolved.sources["classifier.blocks"].startswith("derived")  # the preset leaves it to the model
    # without the preset: the model-agnostic defaults, the model's numbers derived
    plain = resolve_settings(demo, use_preset=False)
    # the demo model was trained at 192 px on crops of 0.8 to 1 of the image: it saw them 192 / sqrt(0.9) wide
    assert plain.preset is None
    assert plain.config.evidence == replace(FITTED_EVIDENCE, view_side=192 / 0.9 ** 0.5)
    assert plain.sources["evidence.view_side"].startswith("derived")
    assert plain.sources["slots.mix"] == "default"
    # overrides win over the preset and say where they came from
    mine = resolve_settings(demo, {"slots.mix": 0.3, "crf": None}, override_sources={"slots.mix": "flag --m"})
    assert mine.config.slots.mix == 0.3 and mine.config.crf is None
    assert mine.sources["slots.mix"] == "flag --m" and mine.sources["crf"] == "override"
    assert "crf.iterations" not in mine.sources  # a stage that is off has no fields


def test_a_checkpoint_preset_and_input_size_travel_with_the_file(tmp_path):
    """Saved in a checkpoint, a preset and a training input size reach pretrained_cfg through the (restricted)
    loader; the input size then drives the fitted CAM scales; a bad preset is named."""
    torch.manual_seed(0)
    model = timm.create_model("test_glnet", num_classes=20)
    mine = PseudoLabelConfig(slots=SlotRefineParams(sharpness=4.0), crf=None)
    preset = make_preset("mine", mine, "by hand")
    path = tmp_path / "ck.pth"
    train = {"input_size": 128, "min_scale": 0.5, "lr": 3e-4}
    torch.save({"model": model.state_dict(), "config": train, "pseudo_labels": preset}, path)
    loaded = load_checkpoint(timm.create_model("test_glnet", num_classes=20), path)
    assert loaded.pretrained_cfg["input_size"] == (3, 128, 128)
    assert timm.create_model("test_glnet").pretrained_cfg["input_size"] == (3, 96, 96)  # others untouched
    resolved = resolve_settings(loaded)
    assert resolved.preset == "mine" and resolved.config == mine.for_model(loaded)
    assert resolved.config.evidence.view_side == pytest.approx(128 / 0.75 ** 0.5)  # mean crop area 0.75
    assert resolved.config.slots.blocks == (1, 2, 4)
    bad = dict(preset, settings={**preset["settings"], "slots.sharpnes": 4.0})
    torch.save({"model": model.state_dict(), "pseudo_labels": bad}, path)
    loaded = load_checkpoint(timm.create_model("test_glnet", num_classes=20), path)
    with pytest.raises(ValueError, match="preset 'mine' the checkpoint carries: SlotRefineParams.sharpnes 4: "
                                         "SlotRefineParams has no such setting"):
        resolve_settings(loaded)
    assert resolve_settings(loaded, use_preset=False).preset is None  # --preset none still works


def test_show_config_lists_every_setting_with_its_source(capsys):
    assert cli.main(["-q", "pseudo-labels", "--show-config", "--slot-mix", "0.3", "--no-crf"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line and not line.startswith("(")}
    assert "preset: glnet_demo-emojivoc" in out.splitlines()[0]
    assert rows["slots.mix"].split()[1:] == ["0.3", "flag", "--slot-mix"]
    assert rows["crf"].split()[1:] == ["off", "flag", "--no-crf"]
    assert rows["evidence.scales"].split()[1:] == ["1,0.5,0.375", "preset", "glnet_demo-emojivoc"]
    assert rows["classifier.blocks"].split()[2] == "derived:"
    assert cli.main(["-q", "pseudo-labels", "--show-config", "--preset", "none", "--method", "cam"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line and not line.startswith("(")}
    assert rows["evidence.scales"].split()[1] == ",".join(f"{s:g}" for s in STANDARD_CAM.scales)
    assert rows["slots"].split()[1:] == ["off", "flag", "--method", "cam"] and "slots.mix" not in rows
    assert cli.main(["-q", "pseudo-labels"]) == 2
    assert "required: --voc-root, --out" in capsys.readouterr().err


def test_manifest_records_settings_sources_and_runner(tmp_path):
    voc = make_emojivoc(tmp_path / "ev", train=1, val=1, seed=5, progress=False)
    out = tmp_path / "pl"
    argv = ["-q", "pseudo-labels", "--voc-root", str(voc), "--out", str(out), "--scales", "1", "--no-crf",
            "--workers", "0", "--max-side", "128", "--threads", "1"]
    assert cli.main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"]["preset"] == "glnet_demo-emojivoc"
    assert manifest["sources"]["settings"]["evidence.scales"] == "flag --scales"
    assert manifest["config"]["slots.blocks"] == [2, 5, 10]
    assert manifest["runner"] == {"max_side": 128, "precision": "float32"}
    assert cli.main(argv[:-4] + ["--max-side", "96", "--threads", "1"]) == 2  # other masks: refused
