"""Reading official checkpoint files from local disk (no downloads)."""
from __future__ import annotations

import argparse

import pytest
import timm
import torch

from glmix_viz.models import (
    best_matching_model,
    default_checkpoint_path,
    load_checkpoint,
    unwrap_state_dict,
)

from .conftest import load_fixture


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub dir under TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def official_file(path, state_dict, key="model"):
    """A file laid out like the release's: weights plus training state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: state_dict, "optimizer": {}, "epoch": 299, "args": argparse.Namespace(lr=1e-3)}, path)
    return path


def test_default_path_follows_torch_home(hub):
    assert default_checkpoint_path("glnet_stl") == hub / "glnet_stl.pth"


def test_pretrained_reads_hub_file_in_release_format(hub):
    fx = load_fixture("tiny_stl")
    official_file(hub / "test_glnet.pth", fx["state_dict"])
    model = timm.create_model("test_glnet", pretrained=True).eval()
    with torch.no_grad():
        assert (model(fx["input"]) - fx["logits"]).abs().max() < 1e-4


def test_pretrained_from_explicit_path_and_bare_state_dict(tmp_path, hub):
    fx = load_fixture("tiny_stl")
    path = tmp_path / "mine.pth"
    torch.save(fx["state_dict"], path)
    for model in (
        timm.create_model("test_glnet", pretrained=True, pretrained_cfg_overlay={"file": str(path)}),
        load_checkpoint(timm.create_model("test_glnet"), path),
    ):
        with torch.no_grad():
            assert (model.eval()(fx["input"]) - fx["logits"]).abs().max() < 1e-4


def test_half_precision_file_loads_as_float32(tmp_path):
    fx = load_fixture("tiny_stl")
    path = tmp_path / "half.pth"
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in fx["state_dict"].items()}},
               path)
    model = load_checkpoint(timm.create_model("test_glnet"), path)
    assert model.head.weight.dtype == torch.float32
    assert torch.allclose(model.head.weight, fx["state_dict"]["head.weight"], atol=1e-2)


def test_missing_file_names_path_and_model_card(hub):
    with pytest.raises(FileNotFoundError) as err:
        timm.create_model("test_glnet", pretrained=True)
    assert str(hub / "test_glnet.pth") in str(err.value)
    assert "github.com/rayleizhu/GLMix" in str(err.value)


def test_glnet_16g_prefers_ema_weights():
    a, b = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    ckpt = {"model": a, "model_ema": b}
    assert unwrap_state_dict(ckpt, "glnet_16g")["w"].item() == 1
    assert unwrap_state_dict(ckpt, "glnet_stl")["w"].item() == 0
    assert unwrap_state_dict({"module.w": torch.ones(1)})["w"].item() == 1


def test_wrong_file_names_best_fit_and_keys(tmp_path):
    fx = load_fixture("tiny_4g")
    path = official_file(tmp_path / "tiny_4g.pth", fx["state_dict"])
    with pytest.raises(ValueError) as err:
        load_checkpoint(timm.create_model("test_glnet"), path)
    msg = str(err.value)
    assert "27 missing keys" in msg and "57 unexpected" in msg
    assert "downsample_layers.0.2.weight" in msg  # first unexpected key
    assert "fits none of the known GLNet models (closest: test_glnet" in msg  # same depths, other layout


@pytest.mark.parametrize("name", ["glnet_stl_paramslot", "glnet_9g", "glnet_4g_tklb"])
def test_best_matching_model_finds_the_official_layout(name):
    with torch.device("meta"):
        sd = timm.create_model(name).state_dict()
    fit, score = best_matching_model(sd)
    assert fit == name.replace("_tklb", "") or fit == name  # heads are ignored
    assert score == 1.0


def test_other_class_count_keeps_fresh_head(tmp_path):
    fx = load_fixture("tiny_stl")
    path = official_file(tmp_path / "t.pth", fx["state_dict"])
    model = timm.create_model("test_glnet", num_classes=3, pretrained=True,
                              pretrained_cfg_overlay={"file": str(path)})
    assert model.head.out_features == 3
    assert torch.equal(model.stages[0].blocks[0].mlp[0].weight,
                       fx["state_dict"]["stages.0.blocks.0.mlp.0.weight"])


def test_checkpoint_num_classes_reads_the_stored_head(tmp_path):
    from glmix_viz.models import checkpoint_num_classes, read_checkpoint

    fx = load_fixture("tiny_stl")
    model = timm.create_model("test_glnet", num_classes=3)
    stored = fx["state_dict"]["head.weight"].shape[0]
    path = official_file(tmp_path / "t.pth", fx["state_dict"])
    assert checkpoint_num_classes(read_checkpoint(path), model) == stored != 3
    headless = {k: v for k, v in fx["state_dict"].items() if not k.startswith("head.")}
    assert checkpoint_num_classes(headless, model) is None


def test_truncated_file_is_a_clear_error(tmp_path):
    fx = load_fixture("tiny_stl")
    path = official_file(tmp_path / "t.pth", fx["state_dict"])
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(timm.create_model("test_glnet"), path)
