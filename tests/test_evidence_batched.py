"""Batched evidence (one forward per input size) equals the pass-by-pass evidence it replaced."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from glmix_viz.analysis.maps import normalize_by_max
from glmix_viz.capture import SlotCapture, SlotRecord
from wsss.evidence import (
    MAX_BATCH_PIXELS,
    ClassHead,
    Evidence,
    EvidenceConfig,
    _cam_at,
    _output_stride,
    compute_evidence,
    stitched_cam,
)
from wsss.pipeline import FITTED_EVIDENCE, STANDARD_CAM


@torch.no_grad()
def reference_evidence(model, image: torch.Tensor, classes: Sequence[int], head: ClassHead,
                       config: EvidenceConfig, slot_blocks: Sequence[int] = ()) -> Evidence:
    """compute_evidence as it was before batching: every pass (and each flip) its own forward."""
    H, W = image.shape[-2:]
    rows = sorted({r for c in classes for r in head.groups[c - 1]})
    index = {r: i for i, r in enumerate(rows)}
    weight = head.weight[rows].to(image.device, image.dtype)
    total = image.new_zeros(len(rows), H, W)
    slots: List[SlotRecord] = []
    stride = _output_stride(model)
    weights = config.weights or (1.0,) * len(config.scales)
    stitch = config.stitch or (1,) * len(config.scales)
    for s_i, (scale, w_s, factor) in enumerate(zip(config.image_scales(H, W), weights, stitch)):
        multiple = 1 if factor == 1 else stride
        size = tuple(max(32, multiple * int(round(n * scale / multiple))) for n in (H, W))
        x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True) if config.flip else (False,):
            xp = x.flip(-1) if flipped else x
            cam = None
            if s_i == 0 and not flipped and slot_blocks:
                with SlotCapture(model, list(slot_blocks)) as cap:
                    cam = _cam_at(model, xp, weight)
                slots = list(cap.records)
            if w_s == 0:
                continue
            if factor > 1:
                cam = stitched_cam(model, xp, weight, factor, stride)
            elif cam is None:
                cam = _cam_at(model, xp, weight)
            if flipped:
                cam = cam.flip(-1)
            total += w_s * F.interpolate(cam[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    per_class = torch.stack([total[[index[r] for r in head.groups[c - 1]]].amax(0) for c in classes])
    return Evidence(tuple(classes), normalize_by_max(per_class).float().cpu(),
                    tuple(SlotRecord(s.name, s.ordinal, s.logits.float().cpu(), s.grid) for s in slots))


CONFIGS = {
    "standard": STANDARD_CAM,
    "fitted": FITTED_EVIDENCE,  # a plain scale with the slot pass, two stitched scales (16 copies, flipped)
    "stitched first": EvidenceConfig(scales=(1.0, 0.5), stitch=(2, 1)),  # slot pass apart from the copies
    "first weighted 0": EvidenceConfig(scales=(1.0, 0.75), weights=(0.0, 1.0)),  # only its slot pass runs
    "no flip": EvidenceConfig(scales=(1.0, 0.5, 0.5), flip=False, stitch=(1, 2, 1)),  # two passes of a size
}


def _model_and_head(device):
    torch.manual_seed(0)
    model = timm.create_model("test_glnet", num_classes=20).eval().to(device)
    return model, ClassHead.from_model(model)


def _check_equal(got: Evidence, want: Evidence, atol: float = 1e-5) -> None:
    assert got.classes == want.classes and got.cams.shape == want.cams.shape
    np.testing.assert_allclose(got.cams.numpy(), want.cams.numpy(), atol=atol, rtol=0)
    same = [(s.name, s.ordinal, s.grid) for s in want.slots]
    assert [(s.name, s.ordinal, s.grid) for s in got.slots] == same
    for a, b in zip(got.slots, want.slots):
        assert a.logits.shape == b.logits.shape and a.logits.shape[0] == 1
        np.testing.assert_allclose(a.logits.numpy(), b.logits.numpy(), atol=atol, rtol=0)


def _cases(device):
    model, head = _model_and_head(device)
    view = FITTED_EVIDENCE.view_side or 64.0
    image = torch.randn(3, 70, 90, generator=torch.Generator().manual_seed(3)).to(device)
    for name, config in CONFIGS.items():
        if config.fitted:
            config = EvidenceConfig(**{**config.__dict__, "view_side": view})
        yield name, model, head, image, config


@pytest.mark.parametrize("max_pixels", [1, 5 * 64 * 96, MAX_BATCH_PIXELS])
def test_batched_evidence_equals_pass_by_pass(max_pixels):
    """CAMs and slot logits within 1e-5 of the unbatched reference, whatever the batch bound: one pass per
    forward (1), batches split mid-size (5 images of 64x96) and the default bound."""
    for name, model, head, image, config in _cases("cpu"):
        want = reference_evidence(model, image, [3, 15], head, config, slot_blocks=(2, 4))
        got = compute_evidence(model, image, [3, 15], head, config, slot_blocks=(2, 4),
                               max_batch_pixels=max_pixels)
        assert len(got.slots) == 2, name
        _check_equal(got, want)
        no_slots = compute_evidence(model, image, [3], head, config, max_batch_pixels=max_pixels)
        _check_equal(no_slots, reference_evidence(model, image, [3], head, config))


def test_batching_runs_one_forward_per_input_size():
    """The standard CAM (4 scales x flip, slots at the first) is 4 forwards, not 8; the fitted default's
    stitched scales run their 2 x 16 shifted copies in one forward each; a small bound splits them."""
    model, head = _model_and_head("cpu")
    image = torch.randn(3, 70, 90)
    calls: List[int] = []
    forward = model.forward_features
    model.forward_features = lambda x: calls.append(x.shape[0]) or forward(x)
    compute_evidence(model, image, [3], head, STANDARD_CAM, slot_blocks=(2,))
    assert calls == [2, 2, 2, 2]  # at scale 1 the slot pass is the unflipped CAM pass
    calls.clear()
    fitted = EvidenceConfig(**{**FITTED_EVIDENCE.__dict__, "view_side": 64.0})
    compute_evidence(model, image, [3], head, fitted, slot_blocks=(2,))
    assert calls == [2, 32, 32]
    calls.clear()
    pixels: List[int] = []
    model.forward_features = lambda x: pixels.append(x.shape[0] * x.shape[-2] * x.shape[-1]) or forward(x)
    compute_evidence(model, image, [3], head, fitted, slot_blocks=(2,), max_batch_pixels=10 * 96 * 96)
    assert len(pixels) > 3 and max(pixels) <= 10 * 96 * 96
    model.forward_features = forward
    assert not any(m._forward_hooks for m in model.modules())  # the slot capture's hooks are gone


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_batched_evidence_equals_pass_by_pass_on_each_device(device):
    """The default bound on every device this machine has (CUDA: TF32 and batch-size dependent kernels)."""
    for name, model, head, image, config in _cases(device):
        want = reference_evidence(model, image, [3, 15], head, config, slot_blocks=(2, 4))
        got = compute_evidence(model, image, [3, 15], head, config, slot_blocks=(2, 4))
        _check_equal(got, want, atol=1e-5 if device == "cpu" else 1e-4)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_bfloat16_evidence_is_close_to_float32(device):
    """precision="bfloat16" on the bundled model and a real photo: the forwards run under autocast (the
    numbers do change), the CAMs in [0, 1] stay within 0.1 of float32's (0.002 on average), the slot
    logits within 0.5, and both come out as float32 on the CPU."""
    from pathlib import Path

    from glmix_viz.images import load_image, normalize
    from glmix_viz.models.demo import load_demo_model
    from wsss.presets import resolve_settings
    from wsss.voc import VOCLayout

    model, _ = load_demo_model()
    model = model.eval().to(device)
    config = resolve_settings(model).config.for_model(model)
    layout = VOCLayout(Path(__file__).parent / "data" / "voc_sample")
    image = normalize(np.asarray(load_image(layout.image(layout.ids("train")[0]), max_side=320))).to(device)
    head, blocks = ClassHead.from_model(model), config.capture_blocks()
    want = compute_evidence(model, image, [9, 15], head, config.evidence, slot_blocks=blocks)
    got = compute_evidence(model, image, [9, 15], head, config.evidence, slot_blocks=blocks,
                           precision="bfloat16")
    assert got.cams.dtype == torch.float32 and {s.logits.dtype for s in got.slots} == {torch.float32}
    cams = (got.cams - want.cams).abs()
    logits = max((a.logits - b.logits).abs().max().item() for a, b in zip(got.slots, want.slots))
    assert 0 < cams.max().item() < 0.1 and cams.mean().item() < 0.002 and 0 < logits < 0.5
    with pytest.raises(ValueError, match="precision 'float16': expected one of float32, bfloat16"):
        compute_evidence(model, image, [9], head, config.evidence, precision="float16")
