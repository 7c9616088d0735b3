"""pytorch-grad-cam on GLNet (docs/gradcam.md): its Grad-CAM equals one made here with torch.autograd.grad.

The reference takes the target layer's output A and dY_c/dA from ``torch.autograd.grad`` (a forward hook
of its own keeps A in the graph), weights each channel by the spatial mean of its gradient, takes
ReLU(sum_k w_k A_k) and then does grad-cam's post-processing in torch: min-max normalisation, bilinear
resize to the input (cv2's ``INTER_LINEAR`` has the half-pixel centres of ``align_corners=False``),
min-max normalisation again (grad-cam's aggregation over target layers, one layer here).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import glmix_viz
from glmix_viz.capture import glmix_blocks
from glmix_viz.images import load_image, preprocess
from glmix_viz.models import MHSABlock, fuse_for_inference
from wsss.voc import VOC_FOREGROUND

CAT = VOC_FOREGROUND.index("cat")  # 7: the demo model's head has the 20 VOC foreground classes in order
EPS = 1e-7  # grad-cam's scale_cam_image: img / (1e-7 + max)


@pytest.fixture(scope="module")
def demo():
    """The bundled demo model and the bundled cat photo as the paper's 224 px crop, ``(1, 3, 224, 224)``."""
    model, _ = glmix_viz.load_demo_model()
    x, _ = preprocess(load_image(glmix_viz.DEMO_IMAGE))
    return model, x[None]


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def tokens_to_nchw(grid):
    """grad-cam's ``reshape_transform`` for an MHSA block's ``(B, N, C)`` tokens on a ``grid = (h, w)``."""
    return lambda t: t.reshape(t.shape[0], *grid, t.shape[2]).permute(0, 3, 1, 2)


def _min_max(cam: torch.Tensor) -> torch.Tensor:
    cam = cam - cam.amin((-2, -1), keepdim=True)
    return cam / (EPS + cam.amax((-2, -1), keepdim=True))


def reference_grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, category: Optional[int],
                       reshape: Optional[Callable] = None) -> dict:
    """Grad-CAM by hand for one image; ``category=None``: the top-1 class."""
    seen = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        with torch.enable_grad():
            logits = model(x)
    finally:
        handle.remove()
    (a,) = seen
    category = int(logits[0].argmax()) if category is None else category
    (g,) = torch.autograd.grad(logits[0, category], a)
    a = a.detach()
    if reshape is not None:
        a, g = reshape(a), reshape(g)
    weights = g.mean((2, 3))  # (1, C)
    raw = (weights[:, :, None, None] * a).sum(1)  # (1, h, w), before the ReLU
    cam = _min_max(F.interpolate(_min_max(raw.clamp_min(0))[:, None], size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)[:, 0])
    return {"activations": a, "gradients": g, "weights": weights, "raw": raw, "cam": cam,
            "category": category, "logits": logits.detach()}


def run_grad_cam(model, layer, x, category: Optional[int], reshape=None) -> dict:
    targets = None if category is None else [ClassifierOutputTarget(category)]
    with GradCAM(model, target_layers=[layer], reshape_transform=reshape) as cam:
        out = cam(x, targets)
        a = cam.activations_and_grads.activations[0]
        g = cam.activations_and_grads.gradients[0]
        raw = cam.get_cam_image(x, layer, targets, a.numpy(), g.numpy())  # grad-cam's map before its ReLU
        logits = cam.outputs.detach()
    return {"cam": out, "activations": a, "gradients": g, "raw": raw, "logits": logits}


LAYERS = {
    "block 2 (stages.0.blocks.1, 1/4)": lambda m: glmix_blocks(m)[1][1],
    "block 10 (last GLMix, 1/16)": lambda m: glmix_blocks(m)[-1][1],
    "last stage (MHSA, 1/32)": lambda m: m.stages[-1],
}


@pytest.mark.parametrize("category", [CAT, None], ids=["cat", "top-1"])
@pytest.mark.parametrize("where", list(LAYERS))
def test_grad_cam_matches_autograd_reference(demo, where, category):
    model, x = demo
    layer = LAYERS[where](model)
    got = run_grad_cam(model, layer, x, category)
    ref = reference_grad_cam(model, layer, x, category)
    assert hooks_left(model) == 0
    assert got["activations"].dim() == 4  # GLMix blocks and stages give NCHW maps: no reshape_transform
    torch.testing.assert_close(got["activations"], ref["activations"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got["gradients"], ref["gradients"], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got["raw"], ref["raw"].numpy(), rtol=1e-4,
                               atol=1e-5 * float(ref["raw"].abs().max()))
    assert got["cam"].shape == (1, 224, 224) and got["cam"].dtype == np.float32
    np.testing.assert_allclose(got["cam"], ref["cam"].numpy(), atol=1e-5)
    # the class Grad-CAM explains (targets=None: the top-1) and the logits the model gives it
    torch.testing.assert_close(got["logits"], ref["logits"], rtol=0, atol=0)


def test_demo_model_sees_no_cat_at_the_last_stage(demo):
    """On the photo (the demo model knows emoji) the cat's evidence is negative everywhere on the 7x7 grid:
    the ReLU leaves nothing, and grad-cam returns zeros (not NaN); block 10 still has positive evidence."""
    model, x = demo
    stage = reference_grad_cam(model, model.stages[-1], x, CAT)
    assert float(stage["raw"].max()) < 0
    assert not run_grad_cam(model, model.stages[-1], x, CAT)["cam"].any()
    block10 = run_grad_cam(model, glmix_blocks(model)[-1][1], x, CAT)["cam"]
    assert block10.max() == pytest.approx(1.0, abs=1e-5) and (block10 > 0.5).mean() > 0.001


def test_last_stage_weights_are_the_head_row_through_the_norm(demo):
    """Hand-worked: after the last stage come BatchNorm (eval: a per-channel scale s), the spatial mean and
    the linear head, so dY_c/dA_k is the constant W_ck s_k / (h w) and Grad-CAM there is the classic CAM
    with the norm folded in."""
    model, x = demo
    assert isinstance(model.norm, nn.BatchNorm2d) and model.global_pool == "avg"
    got = run_grad_cam(model, model.stages[-1], x, CAT)
    h, w = got["gradients"].shape[-2:]
    scale = model.norm.weight / torch.sqrt(model.norm.running_var + model.norm.eps)
    expected = (model.head.weight[CAT] * scale / (h * w)).detach()
    torch.testing.assert_close(got["gradients"][0], expected[:, None, None].expand(-1, h, w),
                               rtol=1e-4, atol=1e-9)


def test_token_blocks_need_a_reshape_transform(demo):
    """An MHSA block of the last stage outputs (B, N, C) tokens: grad-cam refuses them without a
    ``reshape_transform``; with one its map is the last stage's (the stage only reshapes those tokens)."""
    model, x = demo
    block = model.stages[-1].blocks[-1]
    assert isinstance(block, MHSABlock)
    with pytest.raises(ValueError, match="Invalid grads shape"):
        run_grad_cam(model, block, x, CAT)
    assert hooks_left(model) == 0
    grid = (x.shape[-2] // 32, x.shape[-1] // 32)
    top = reference_grad_cam(model, model.stages[-1], x, None)["category"]  # positive evidence there
    tokens = run_grad_cam(model, block, x, top, reshape=tokens_to_nchw(grid))
    ref = reference_grad_cam(model, block, x, top, reshape=tokens_to_nchw(grid))
    np.testing.assert_allclose(tokens["cam"], ref["cam"].numpy(), atol=1e-5)
    stage = run_grad_cam(model, model.stages[-1], x, top)
    assert tokens["cam"].max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(tokens["cam"], stage["cam"], atol=1e-6)


def test_fused_cpu_kernels_do_not_change_grad_cam(demo):
    """grad-cam needs gradients, so the plain path runs with or without oneDNN fusion: the maps are identical,
    and the logits it explains are those of (fused) inference."""
    model, x = demo
    layer = glmix_blocks(model)[-1][1]
    try:
        fuse_for_inference(model, True)
        fused = run_grad_cam(model, layer, x, CAT)
        with torch.no_grad():
            inference = model(x)
        fuse_for_inference(model, False)
        plain = run_grad_cam(model, layer, x, CAT)
    finally:
        fuse_for_inference(model, True)
    np.testing.assert_array_equal(fused["cam"], plain["cam"])
    torch.testing.assert_close(fused["logits"], inference, rtol=0, atol=1e-5)
