"""SlotCapture: selection, records, numbers, hook hygiene."""
from __future__ import annotations

import pytest
import timm
import torch

from glmix_viz.capture import SlotCapture, SlotRecord, glmix_blocks, resolve_blocks

from .conftest import load_fixture


def hooks_left(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_select_by_ordinal_and_name(tiny_model):
    sel = resolve_blocks(tiny_model, [4, "stages.0.blocks.0", "2", 4])
    assert [(o, n) for o, n, _ in sel] == [(1, "stages.0.blocks.0"), (2, "stages.1.blocks.0"),
                                           (4, "stages.2.blocks.1")]
    assert len(resolve_blocks(tiny_model, "all")) == len(resolve_blocks(tiny_model)) == 4


def test_bad_selectors_list_valid_choices(tiny_model):
    with pytest.raises(ValueError, match=r"valid ordinals are 1\.\.4") as err:
        SlotCapture(tiny_model, blocks=[5])
    assert "stages.2.blocks.1" in str(err.value)
    with pytest.raises(ValueError, match="no GLMix block named 'stages.3.blocks.0'") as err:
        SlotCapture(tiny_model, blocks="stages.3.blocks.0")
    assert "stages.0.blocks.0" in str(err.value)
    with pytest.raises(ValueError, match="out of range"):
        SlotCapture(tiny_model, blocks=0)
    with pytest.raises(ValueError, match="no GLMix block"):
        SlotCapture(torch.nn.Linear(2, 2))


def test_records_match_fixture_with_shapes_and_distributions(tiny_model):
    fx = load_fixture("tiny_stl")
    with torch.no_grad(), SlotCapture(tiny_model, blocks=[1, 3]) as cap:
        tiny_model(fx["input"])
    assert [r.ordinal for r in cap.records] == [1, 3]
    rec = cap[3]
    assert cap["stages.2.blocks.0"] is rec
    assert isinstance(rec, SlotRecord) and rec.grid == (6, 8) and rec.num_slots == 64
    assert (rec.logits - fx["slot_logits"][2]).abs().max() < 1e-4
    weights = rec.clustering_weights()
    assert weights.shape == (2, 64, 48)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 64), atol=1e-5)
    assert torch.allclose(weights, torch.softmax(fx["slot_logits"][2], dim=-1), atol=1e-5)
    maps = rec.dispatch_maps()
    assert maps.shape == (2, 64, 6, 8)
    assert torch.allclose(maps.sum(1), torch.ones(2, 6, 8), atol=1e-5)
    expected = torch.softmax(fx["slot_logits"][2], dim=1).reshape(2, 64, 6, 8)  # row-major H, W
    assert torch.allclose(maps, expected, atol=1e-5)
    with pytest.raises(KeyError, match="captured blocks: 1=stages.0.blocks.0, 3=stages.2.blocks.0"):
        cap[2]


def test_capture_does_not_change_outputs_and_removes_hooks(tiny_model):
    x = torch.randn(3, 3, 80, 112)
    with torch.no_grad():
        plain = tiny_model(x)
        with SlotCapture(tiny_model) as cap:
            hooked = tiny_model(x)
            assert hooks_left(tiny_model) == 4
    assert torch.equal(plain, hooked)
    assert hooks_left(tiny_model) == 0
    assert len(cap) == 4 and cap.records[0].logits.shape == (3, 64, 20 * 28)


def test_hooks_removed_when_forward_raises(tiny_model):
    with pytest.raises(RuntimeError):
        with SlotCapture(tiny_model):
            tiny_model(torch.randn(1, 5, 64, 64))  # wrong channel count
    assert hooks_left(tiny_model) == 0


def test_train_mode_and_gradients_flow(tiny_model):
    tiny_model.train()
    x = torch.randn(2, 3, 64, 64)
    with SlotCapture(tiny_model, blocks=2, detach=False) as cap:
        out = tiny_model(x)
    rec = cap[2]
    assert rec.logits.requires_grad
    (rec.logits.sum() + out.sum()).backward()
    assert tiny_model.stages[1].blocks[0].slot_scale.grad is not None


def test_records_accumulate_per_forward_and_clear(tiny_model):
    with torch.no_grad(), SlotCapture(tiny_model, blocks=[1], to_cpu=True) as cap:
        tiny_model(torch.randn(1, 3, 64, 64))
        tiny_model(torch.randn(2, 3, 32, 32))
        assert [r.logits.shape[0] for r in cap.records] == [1, 2]
        assert cap[1].grid == (8, 8)
        cap.clear()
        assert len(cap) == 0


def test_capture_cannot_be_entered_twice(tiny_model):
    cap = SlotCapture(tiny_model)
    with cap:
        with pytest.raises(RuntimeError, match="already active"):
            cap.__enter__()
    assert hooks_left(tiny_model) == 0


def test_hybrid_stage_blocks_are_ordered(official):
    with torch.device("meta"):
        model = timm.create_model("glnet_4g")
    names = [n for n, _ in glmix_blocks(model)]
    assert names == official["glnet_4g"]["glmix_blocks"]
    assert [o for o, _, _ in resolve_blocks(model, "stages.2.blocks.16")] == [17]

