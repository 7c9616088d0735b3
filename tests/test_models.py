"""The GLNet family is the released one: same keys, shapes, parameter counts and numbers."""
from __future__ import annotations

import importlib

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from glmix_viz.capture import SlotCapture, glmix_blocks
from glmix_viz.models import OFFICIAL_MODELS, GLNet, GLNetTokenLabel, fuse_for_inference

from .conftest import FIXTURES, load_fixture

TOL = 1e-4


def build_from_fixture(name: str) -> tuple[nn.Module, dict]:
    fx = load_fixture(name)
    cls = {"GLNet": GLNet, "GLNet_tklb": GLNetTokenLabel}[fx["model_class"]]
    model = cls(**fx["config"])
    model.load_state_dict(fx["state_dict"], strict=True)
    return model.eval(), fx


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_logits_and_slot_logits_match_release(name):
    model, fx = build_from_fixture(name)
    assert [n for n, _ in glmix_blocks(model)] == fx["glmix_block_names"]
    with torch.no_grad(), SlotCapture(model) as cap:
        logits = model(fx["input"])
    assert (logits - fx["logits"]).abs().max().item() < TOL
    assert [r.name for r in cap.records] == fx["glmix_block_names"]
    for record, expected in zip(cap.records, fx["slot_logits"]):
        assert record.logits.shape == expected.shape
        assert (record.logits - expected).abs().max().item() < TOL, record.name


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_numbers_hold_with_grad_and_nchw_blocks(name):
    """Same numbers with autograd on, and when a block is fed a plain NCHW tensor."""
    model, fx = build_from_fixture(name)
    logits = model(fx["input"])
    assert (logits.detach() - fx["logits"]).abs().max().item() < TOL
    first = model.stages[0].blocks[0]
    x = model.downsample_layers[0](fx["input"]).contiguous()
    with torch.no_grad():
        a = first(x)
        b = first(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", OFFICIAL_MODELS)
def test_official_keys_shapes_params_and_blocks(name, official):
    ref = official[name]
    with torch.device("meta"):
        model = timm.create_model(name)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(shapes) == list(ref["state_dict"])  # same keys, same order
    assert shapes == ref["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    assert [n for n, _ in glmix_blocks(model)] == ref["glmix_blocks"]
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert model.pretrained_cfg["crop_pct"] == 0.875


def test_unknown_keyword_is_an_error():
    with pytest.raises(TypeError, match="slot_int"):
        GLNet(slot_int="param")
    with pytest.raises(TypeError):
        timm.create_model("test_glnet", mixing_mode="glmix")


def test_bad_option_values_are_named():
    with pytest.raises(ValueError, match="mixing_mode='conv'"):
        GLNet(mixing_modes=("glmix", "glmix", "conv", "mha"))
    with pytest.raises(ValueError, match="norm_layer='GroupNorm'"):
        GLNet(norm_layer="GroupNorm")


def test_norm_layer_string_equals_class():
    torch.manual_seed(0)
    a = GLNet(norm_layer="BatchNorm2d", depth=(1, 1, 1, 1), embed_dim=(32, 64, 96, 128), num_classes=5)
    b = GLNet(norm_layer=nn.BatchNorm2d, depth=(1, 1, 1, 1), embed_dim=(32, 64, 96, 128), num_classes=5)
    b.load_state_dict(a.state_dict())
    assert isinstance(a.norm, nn.BatchNorm2d)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_reset_classifier(tiny_model):
    x = torch.randn(2, 3, 64, 96)
    feats = tiny_model.forward_head(tiny_model.forward_features(x), pre_logits=True)
    tiny_model.reset_classifier(7)
    assert tiny_model.num_classes == 7
    assert tiny_model.get_classifier().out_features == 7
    out = tiny_model(x)
    assert out.shape == (2, 7)
    w, b = tiny_model.head.weight, tiny_model.head.bias
    assert torch.allclose(out, feats @ w.T + b, atol=1e-5)
    tiny_model.reset_classifier(0)
    assert torch.allclose(tiny_model(x), feats, atol=1e-6)


def test_reset_classifier_token_label():
    model, fx = build_from_fixture("tiny_4g_tklb")
    model.reset_classifier(3)
    assert model(fx["input"]).shape == (2, 3)
    assert model.tklb_aux_head.out_features == 3


def test_forward_intermediates_and_features(tiny_model):
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        final, inters = tiny_model.forward_intermediates(x)
        assert torch.allclose(final, tiny_model.forward_features(x), atol=1e-6)
        assert [t.shape[1:] for t in inters] == [
            (32, 24, 32), (64, 12, 16), (128, 6, 8), (256, 3, 4)
        ]
        only = tiny_model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        assert len(only) == 1 and torch.allclose(only[0], inters[1])
    assert [f["reduction"] for f in tiny_model.feature_info] == [4, 8, 16, 32]
    backbone = timm.create_model("test_glnet", features_only=True, out_indices=(1, 3))
    backbone.load_state_dict(tiny_model.state_dict(), strict=False)
    assert backbone.feature_info.channels() == [64, 256]


def test_grad_checkpointing_same_numbers_and_grads(tiny_model):
    x = torch.randn(2, 3, 64, 64)
    tiny_model.zero_grad()
    tiny_model(x).square().sum().backward()
    ref = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
    tiny_model.zero_grad()
    tiny_model.set_grad_checkpointing(True)
    out = tiny_model(x)
    out.square().sum().backward()
    assert all(s.grad_checkpointing for s in tiny_model.stages)
    for n, p in tiny_model.named_parameters():
        if n in ref:
            assert torch.allclose(p.grad, ref[n], atol=1e-5), n


def test_use_checkpoint_stages_is_honoured():
    model = timm.create_model("test_glnet", use_checkpoint_stages=(0, 2))
    assert [s.grad_checkpointing for s in model.stages] == [True, False, True, False]

_NEEDS_ONEDNN = pytest.mark.skipif(
    not importlib.import_module("glmix_viz.models._fused").AVAILABLE,
    reason="this PyTorch has no oneDNN fused ops: there is no fused path",
)


def _plain(model, x):
    """``model(x)`` on the plain PyTorch path (fusion off for this call only)."""
    switch = model.fused_inference
    fuse_for_inference(model, False)
    try:
        return model(x)
    finally:
        fuse_for_inference(model, switch.enabled)


@_NEEDS_ONEDNN
@pytest.mark.parametrize("name", ["tiny_4g", "tiny_stl_paramslot"])
def test_fused_cpu_inference_equals_plain_path(name, monkeypatch):
    from glmix_viz.models import _fused

    model, fx = build_from_fixture(name)
    calls = []
    conv_add = _fused._conv_add
    monkeypatch.setattr(_fused, "_conv_add", lambda *a: calls.append(1) or conv_add(*a))
    with torch.no_grad():
        fused = model(fx["input"])
        assert calls, "the fused path did not run"
        assert model.fused_inference.enabled  # no kernel refused and turned it off
        plain = _plain(model, fx["input"])
    assert (fused - plain).abs().max() < 1e-5
    assert (fused - fx["logits"]).abs().max() < TOL


class _CountingOps:
    """oneDNN's op namespace, counting the uses of its matrix product."""

    def __init__(self, ops, calls: list) -> None:
        self._ops, self._calls = ops, calls

    def __getattr__(self, name):
        if name == "_linear_pointwise":
            self._calls.append(name)
        return getattr(self._ops, name)


@_NEEDS_ONEDNN
@pytest.mark.parametrize("block", ["mha", "mha_nchw", "glmix"])
def test_wide_pointwise_layers_run_as_matrix_products(block, monkeypatch):
    """Layers with at least MATMUL_MIN_CHANNELS inputs (the last MLP layer at 640 channels, 2560 hidden)
    on at least MATMUL_MIN_ROWS pixels take oneDNN's matrix product (plain, GELU, residual add, in place,
    layer scale) and equal the plain path; narrower ones, or fewer pixels, stay convolutions."""
    from glmix_viz.models import GLMixBlock, MHSABlock, MHSANCHWBlock, _fused

    assert (_fused.MATMUL_MIN_CHANNELS, _fused.MATMUL_MIN_ROWS) == (2560, 128)
    torch.manual_seed(0)
    if block == "mha":
        wide, narrow = MHSABlock(640, 20), MHSABlock(256, 8)
        x_wide, x_narrow, x_few = torch.randn(2, 64, 640), torch.randn(2, 64, 256), torch.randn(2, 63, 640)
    else:
        cls = MHSANCHWBlock if block == "mha_nchw" else GLMixBlock
        extra = {"mlp_dw": True, "layerscale": 0.5} if block == "mha_nchw" else {}
        wide, narrow = cls(640, 20, **extra), cls(256, 8, **extra)
        x_wide, x_narrow, x_few = (torch.randn(2, c, 8, h) for c, h in ((640, 8), (256, 8), (640, 7)))
    calls: list = []
    monkeypatch.setattr(_fused, "_ops", _CountingOps(_fused._ops, calls))
    for module, x, wide_layer in ((wide, x_wide, True), (narrow, x_narrow, False), (wide, x_few, False)):
        module.eval()
        with torch.no_grad():
            del calls[:]
            fused = module(x)
            assert module.fused_inference.enabled
            assert bool(calls) is wide_layer
            module.fused_inference.enabled = False
            plain = module(x)
            module.fused_inference.enabled = True
        assert (fused - plain).abs().max() < 1e-4 * plain.abs().max()
    if block == "mha":  # the GELU post-op on the matrix product (a first layer this wide)
        del calls[:]
        x, w, b = torch.randn(128, 2560), torch.randn(96, 2560) / 50, torch.randn(96)
        out = _fused.linear(x, w, b, _fused.FusedInference(True), gelu=True)
        assert calls and (out - F.gelu(F.linear(x, w, b))).abs().max() < 1e-5
        with torch.inference_mode():  # weights without a version counter: used unpacked, as a matrix
            made, x = MHSABlock(640, 20).eval(), torch.randn(2, 64, 640)
            del calls[:]
            fused = made(x)
            made.fused_inference.enabled = False
            assert calls and (fused - made(x)).abs().max() < 1e-4 * fused.abs().max()


@_NEEDS_ONEDNN
def test_packed_weights_follow_input_shapes_and_weight_changes():
    from glmix_viz.models import _fused

    model, fx = build_from_fixture("tiny_4g")
    x = fx["input"]
    _fused.clear_packed_weights()
    with torch.no_grad():
        # shapes change: packs for each, none reused wrongly
        shapes = [x[:1], x, torch.cat([x, x.flip(-1)]), torch.cat([x] * 3), torch.cat([x] * 4)]
        assert len(shapes) > _fused.PACKS_PER_WEIGHT  # more shapes than packs are kept
        for inp in (*shapes, x):
            assert (model(inp) - _plain(model, inp)).abs().max() < 1e-5
        assert _fused._packed_cache, "no weight was packed"
        sizes = [len(e) for e in _fused._packed_cache.values()]
        assert max(sizes) == _fused.PACKS_PER_WEIGHT  # one pack per recent input shape, no more
        before = model(x)
        for p in model.parameters():  # in place, as an optimizer step or load_state_dict does
            p.mul_(1.1)
        after = model(x)
    assert (after - _plain(model, x)).abs().max() < 1e-5
    assert (after - before).abs().max() > 1e-3  # the stale packs were not used


@_NEEDS_ONEDNN
def test_packed_weights_are_freed_with_the_model():
    import gc

    from glmix_viz.models import _fused

    _fused.clear_packed_weights()
    model = timm.create_model("test_glnet").eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert _fused._packed_cache
    del model
    gc.collect()
    assert not _fused._packed_cache


@_NEEDS_ONEDNN
def test_fused_sequential_folds_batchnorm_and_gelu():
    from glmix_viz.models import _fused

    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.GELU(),
                        nn.Conv2d(8, 16, 2, stride=2), nn.BatchNorm2d(16),  # the release's stem, "proj.norm"
                        nn.BatchNorm2d(16), nn.Conv2d(16, 8, 2, stride=2))  # "norm.proj" downsampling
    for bn in (seq[1], seq[4], seq[5]):  # statistics and affine parameters far from the identity
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.2, 3), bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    seq.eval()
    x = torch.randn(2, 3, 20, 28)
    calls = []
    conv = _fused._conv
    with torch.no_grad():
        expected = seq(x)
        _fused._conv = lambda *a, **k: calls.append(a[5] if len(a) > 5 else k.get("unary")) or conv(*a, **k)
        try:
            got = _fused.sequential(seq, x, _fused.FusedInference(True))
        finally:
            _fused._conv = conv
    assert calls == ["gelu", "none", "none"]  # three folded convolutions, the first with its GELU
    assert (got - expected).abs().max() < 1e-5


def test_hooks_on_fused_submodules_still_fire():
    model = timm.create_model("test_glnet").eval()
    block = next(m for m in model.modules() if type(m).__name__ == "GLMixBlock")
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o, n=n: seen.append(n))
               for n, m in [("fc1", block.mlp[0]), ("pw1", block.feature_conv[0]),
                            ("stem", model.downsample_layers[0][0])]]
    x = torch.randn(1, 3, 64, 64)
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    assert sorted(seen) == ["fc1", "pw1", "stem"]
    assert (out - _plain(model, x)).abs().max() < 1e-5


def test_model_made_under_inference_mode_runs_fused_unpacked():
    from glmix_viz.models import _fused

    _fused.clear_packed_weights()
    with torch.inference_mode():  # its parameters track no version: nothing may be cached for them
        model = timm.create_model("test_glnet").eval()
        x = torch.randn(2, 3, 64, 64)
        out = model(x)
        assert not _fused._packed_cache
        assert (out - _plain(model, x)).abs().max() < 1e-5


@_NEEDS_ONEDNN
@pytest.mark.parametrize("mlp_dw", [False, True])
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 40])  # one image per group / the whole batch at once
def test_fused_mlp_in_image_groups_equals_plain_mlp(mlp_dw, chunk_bytes, monkeypatch):
    from glmix_viz.models import _fused
    from glmix_viz.models.glnet import _conv_mlp

    mlp = _conv_mlp(8, 4.0, mlp_dw).eval()
    x = torch.randn(3, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    y = torch.randn(3, 8, 5, 7)
    gamma = torch.rand(1, 8, 1, 1)
    monkeypatch.setattr(_fused, "CHUNK_BYTES", chunk_bytes)
    assert _fused.images_per_chunk(y, 32) == (1 if chunk_bytes == 1 else 3)
    with torch.no_grad():
        expected = x + gamma * mlp(y)
        x0, y0 = x.clone(), y.clone()
        switch = _fused.FusedInference(True)
        copy = _fused.conv_mlp_residual(x, y, mlp, gamma, switch)
        assert torch.equal(x, x0) and torch.equal(y, y0)  # inputs untouched without inplace
        same = _fused.conv_mlp_residual(x, y, mlp, gamma, switch, inplace=True)
    assert same is x and torch.equal(y, y0)
    assert (copy - expected).abs().max() < 1e-5
    assert torch.equal(same, copy)


def test_slot_scale_argument_sets_every_glmix_block_and_scales_the_logits():
    torch.manual_seed(0)
    base = timm.create_model("test_glnet").eval()
    sharp = timm.create_model("test_glnet", slot_scale=5.0).eval()
    sharp.load_state_dict({k: v for k, v in base.state_dict().items() if not k.endswith("slot_scale")},
                          strict=False)
    scales = [m.slot_scale.item() for m in sharp.modules() if hasattr(m, "slot_scale")]
    assert scales == [5.0] * 4
    x = torch.randn(1, 3, 64, 64)
    with SlotCapture(base, [1]) as a, SlotCapture(sharp, [1]) as b, torch.no_grad():
        base(x), sharp(x)
    # block 1 sees the same input in both models: logits = scale * cos(slot, pixel)
    ratio = 5.0 / base.stages[0].blocks[0].slot_scale.item()
    torch.testing.assert_close(b[1].logits, a[1].logits * ratio, rtol=1e-4, atol=1e-5)


def test_global_forward_hook_turns_fusion_off():
    model = timm.create_model("test_glnet").eval()
    seen = []
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(type(m).__name__) if isinstance(m, nn.Conv2d) else None)
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
    finally:
        handle.remove()
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(seen) == n_convs  # every convolution ran as a module: none was bypassed by a fused kernel


class _Refusing:
    """Stands in for ``torch.ops.mkldnn``: every fused op raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name):
        def refuse(*args, **kwargs):
            raise self.error

        return refuse


@_NEEDS_ONEDNN
def test_unsupported_fused_op_falls_back_once_with_one_record_per_block(monkeypatch, caplog):
    """An op that refuses its input: fusion turns off for that model (one warning), the plain path runs,
    and each block's slots are tapped once (the fallback used to fire the tap twice), with the plain path's
    numbers."""
    from glmix_viz.capture import SlotCapture
    from glmix_viz.models import _fused

    model, fx = build_from_fixture("tiny_stl")
    with torch.no_grad(), SlotCapture(model, "all") as expected:
        plain_logits = _plain(model, fx["input"])

    def refusing_conv(x, conv, switch):  # the GLMix block's own fused convolution refuses (the stem's ran)
        try:
            raise RuntimeError("could not create a primitive descriptor")
        except RuntimeError as err:
            switch.refused(err)
        return None

    other, _ = build_from_fixture("tiny_stl")
    monkeypatch.setattr(_fused, "conv", refusing_conv)
    with caplog.at_level("WARNING", _fused.__name__), torch.no_grad():
        with SlotCapture(model, "all") as cap:
            logits = model(fx["input"])
        again = model(fx["input"])  # off already: the plain path, no second warning
    assert not model.fused_inference.enabled  # turned off for this model, all its blocks
    assert all(m.fused_inference is model.fused_inference for m in model.modules()
               if hasattr(m, "fused_inference"))
    assert other.fused_inference.enabled  # and for no other model
    assert len(caplog.records) == 1 and "turned off for this model" in caplog.records[0].getMessage()
    torch.testing.assert_close(again, plain_logits, rtol=0, atol=0)  # all plain now
    assert [r.ordinal for r in cap.records] == [r.ordinal for r in expected.records]  # one record per block
    torch.testing.assert_close(logits, plain_logits, rtol=0, atol=1e-5)
    for got, want in zip(cap.records, expected.records):
        torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=1e-5)


@_NEEDS_ONEDNN
@pytest.mark.parametrize("error", [RuntimeError("DefaultCPUAllocator: not enough memory: tried to allocate"),
                                   RuntimeError("some other failure inside the kernel")])
def test_other_fused_errors_propagate_and_keep_fusion_on(monkeypatch, error):
    """Only "unsupported" turns fusion off: out of memory or any other error is the caller's to see."""
    from glmix_viz.models import _fused

    model, fx = build_from_fixture("tiny_stl")
    monkeypatch.setattr(_fused, "_ops", _Refusing(error))
    with torch.no_grad(), pytest.raises(RuntimeError, match=str(error)[:20]):
        model(fx["input"])
    assert model.fused_inference.enabled


# ----------------------------------------------------------------------------- modules are called as modules


def _model_for_module_checks(kind: str) -> nn.Module:
    """Tiny models covering every block type: GLMix + token MHSA (STL), GLMix + MHSA-NCHW with position
    convolutions, depthwise MLP and token-label head, and the same with layer scale."""
    if kind == "layerscale":
        torch.manual_seed(0)
        return GLNet(**{**load_fixture("tiny_4g")["config"], "layerscale": 0.5}).eval()
    return build_from_fixture(kind)[0]


def _modules_with_weights(model: nn.Module) -> list:
    return [(n, m) for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


class _Doubled(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return 2 * self.inner(*args, **kwargs)


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@pytest.mark.parametrize("kind", ["tiny_stl", "tiny_4g_tklb", "layerscale"])
def test_every_module_with_weights_is_called_once_per_forward(kind):
    """A forward hook on any module that holds parameters fires exactly once per forward, in train and
    eval mode, with and without autograd: no fused path reads a child's weights behind its back, and none
    runs a module twice."""
    model = _model_for_module_checks(kind)
    x = torch.randn(2, 3, 64, 96)
    modules = _modules_with_weights(model)
    kinds = {type(m).__name__ for _, m in modules}
    assert {"Conv2d", "Linear", "LayerNorm2d", "BatchNorm2d", "GLMixBlock", "MultiheadSelfAttention"} <= kinds
    for train in (False, True):
        model.train(train)
        for grad in (False, True):
            for name, module in modules:
                calls = []
                handle = module.register_forward_hook(lambda m, i, o: calls.append(1))
                try:
                    with torch.set_grad_enabled(grad):
                        model(x)
                finally:
                    handle.remove()
                assert len(calls) == 1, (name, train, grad, len(calls))
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("kind", ["tiny_stl", "tiny_4g_tklb", "layerscale"])
def test_a_module_swapped_in_is_used(kind):
    """Replacing any module that holds parameters by a wrapper doubling its output changes the model's
    output (eval mode, with and without autograd): the wrapper is called, not bypassed by a fused kernel
    that reads the weights of the module it expected. (In train mode a BatchNorm right after a scaled
    convolution would normalise the factor away.)"""
    model = _model_for_module_checks(kind)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
    kinds = set()
    for name, module in _modules_with_weights(model):
        kinds.add(type(module).__name__)
        _swap(model, name, _Doubled(module))
        try:
            for grad in (False, True):
                with torch.set_grad_enabled(grad):
                    change = (model(x).detach() - ref).abs().max().item()
                assert change > 1e-3 * ref.abs().max().item(), (name, grad, change)
        finally:
            _swap(model, name, module)
    assert {"Conv2d", "Linear", "GLMixBlock", "MultiheadSelfAttention"} <= kinds
    if kind != "tiny_stl":  # the hybrid layout: depthwise MLP convolution, layer scale
        assert "ResDWConvNCHW" in kinds and ("LayerScale" in kinds) == (kind == "layerscale")
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)  # all put back


# ----------------------------------------------------------------------------- the fused path, per model


@_NEEDS_ONEDNN
def test_fusion_is_switched_per_model(monkeypatch):
    from glmix_viz import models
    from glmix_viz.models import _fused

    assert "fuse_for_inference" in models.__all__
    a, fx = build_from_fixture("tiny_4g")
    b, _ = build_from_fixture("tiny_4g")
    switches = {id(m.fused_inference) for m in a.modules() if hasattr(m, "fused_inference")}
    assert len(switches) == 1 and a.fused_inference.enabled  # one switch, on by default
    calls = []
    conv_add = _fused._conv_add
    monkeypatch.setattr(_fused, "_conv_add", lambda *args: calls.append(1) or conv_add(*args))
    assert fuse_for_inference(b, False) is b
    with torch.no_grad():
        plain = b(fx["input"])
        assert not calls and a.fused_inference.enabled  # b is off, a is not
        fused = a(fx["input"])
        assert calls
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(plain, fx["logits"], rtol=0, atol=TOL)
    monkeypatch.setenv("GLMIX_FUSED", "0")  # the default for models built from now on
    assert not timm.create_model("test_glnet").fused_inference.enabled
    assert a.fused_inference.enabled


@pytest.mark.parametrize("name", ["tiny_stl", "tiny_4g_tklb"])
def test_tracers_and_scripting_see_the_plain_path(name):
    """FX, torch.jit.trace and TorchScript record the plain PyTorch ops, never the oneDNN kernels, and give
    the eager (fused) numbers."""
    model, _ = build_from_fixture(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager = model(x)
        traced = torch.jit.trace(model, x, check_trace=False)
        scripted = torch.jit.script(model)
        fx_model = torch.fx.symbolic_trace(model)
        for graph_module in (traced, scripted, fx_model):
            assert "mkldnn" not in str(graph_module.graph)
            torch.testing.assert_close(graph_module(x), eager, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- timm manners


def test_heads_without_pooling_give_logits_per_position():
    """``global_pool=""``: the classifier at every position, ``(B, num_classes, h, w)`` (features without
    classifier); for GLNet their spatial mean is the pooled logits (the head is linear)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 96)
    pooled = timm.create_model("test_glnet").eval()
    per_position = timm.create_model("test_glnet", global_pool="").eval()
    per_position.load_state_dict(pooled.state_dict())
    with torch.no_grad():
        feats = pooled.forward_features(x)
        logits = per_position(x)
        assert logits.shape == (2, 10, 2, 3)
        torch.testing.assert_close(logits.mean((2, 3)), pooled(x), rtol=0, atol=1e-5)
        per_position.reset_classifier(0)
        torch.testing.assert_close(per_position(x), feats, rtol=0, atol=0)
    model, fx = build_from_fixture("tiny_4g_tklb")
    with torch.no_grad():
        feats = model.forward_features(fx["input"])
        model.reset_classifier(0)  # no classifier: the pooled features, as GLNet
        torch.testing.assert_close(model(fx["input"]), feats.mean((2, 3)), rtol=0, atol=0)
        model.reset_classifier(3, "")
        tokens = feats.permute(0, 2, 3, 1)
        expected = (tokens @ model.head.weight.T + model.head.bias
                    + 0.5 * (tokens @ model.tklb_aux_head.weight.T + model.tklb_aux_head.bias))
        torch.testing.assert_close(model(fx["input"]), expected.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
        model.reset_classifier(0, "")
        assert model(fx["input"]).shape == feats.shape


def test_device_and_dtype_at_construction():
    with torch.device("cpu"):
        meta = timm.create_model("glnet_4g_tklb", device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert {b.device.type for b in meta.buffers()} == {"meta"}
    double = timm.create_model("test_glnet", dtype=torch.float64).eval()
    assert {p.dtype for p in double.parameters()} == {torch.float64}
    double.reset_classifier(4)
    assert double.head.weight.dtype == torch.float64 and not double.head.training
    with torch.no_grad():
        assert double(torch.randn(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64
