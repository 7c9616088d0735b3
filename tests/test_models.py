"""The GLNet family is the released one: same keys, shapes, parameter counts and numbers."""
from __future__ import annotations

import importlib

import pytest
import timm
import torch
import torch.nn as nn

from glmix_viz.capture import SlotCapture, glmix_blocks
from glmix_viz.models import OFFICIAL_MODELS, GLNet, GLNetTokenLabel

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



def _plain(model, x):
    from glmix_viz.models import _fused

    _fused.set_fused_inference(False)
    try:
        return model(x)
    finally:
        _fused.set_fused_inference(True)


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
        assert _fused.fused_inference_enabled()  # no kernel refused and disabled it
        plain = _plain(model, fx["input"])
    assert (fused - plain).abs().max() < 1e-5
    assert (fused - fx["logits"]).abs().max() < TOL


def test_packed_weights_follow_input_shapes_and_weight_changes():
    from glmix_viz.models import _fused

    model, fx = build_from_fixture("tiny_4g")
    x = fx["input"]
    _fused.clear_packed_weights()
    with torch.no_grad():
        # shapes change: packs for each, none reused wrongly
        for inp in (x, x[:1], torch.cat([x, x.flip(-1)]), x):
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
            got = _fused.sequential(seq, x)
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
        copy = _fused.conv_mlp_residual(x, y, mlp, gamma)
        assert torch.equal(x, x0) and torch.equal(y, y0)  # inputs untouched without inplace
        same = _fused.conv_mlp_residual(x, y, mlp, gamma, inplace=True)
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


_NEEDS_ONEDNN = pytest.mark.skipif(
    not importlib.import_module("glmix_viz.models._fused")._HAS_OPS,
    reason="this PyTorch has no oneDNN fused ops: there is no fused path to fall back from",
)


class _Refusing:
    """Stands in for ``torch.ops.mkldnn``: every fused op raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name):
        def refuse(*args, **kwargs):
            raise self.error

        return refuse


@_NEEDS_ONEDNN
def test_unsupported_fused_op_falls_back_once_with_one_record_per_block(monkeypatch):
    """An op that refuses its input: fusion turns off, the plain path runs, and each block's slots are
    tapped once (the fallback used to fire the tap twice), with the plain path's numbers."""
    from glmix_viz.capture import SlotCapture
    from glmix_viz.models import _fused

    model, fx = build_from_fixture("tiny_stl")
    with torch.no_grad(), SlotCapture(model, "all") as expected:
        plain_logits = _plain(model, fx["input"])

    def refusing_conv(x, conv):  # the GLMix block's own fused convolution refuses (the stem's ran fused)
        try:
            raise RuntimeError("could not create a primitive descriptor")
        except RuntimeError as err:
            _fused._fall_back(err)
        return None

    monkeypatch.setattr(_fused, "conv", refusing_conv)
    try:
        with torch.no_grad(), SlotCapture(model, "all") as cap:
            logits = model(fx["input"])
        assert not _fused.fused_inference_enabled()  # turned off, once, for the process
    finally:
        _fused.set_fused_inference(True)
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
    assert _fused.fused_inference_enabled()
