"""``torch.export`` and ``torch.compile`` see the plain PyTorch path: a graph without oneDNN kernels that
serialises, no graph breaks, no recompiles when fusion is switched, the eager (fused) numbers, and the
fused path still on for eager calls afterwards (see docs/speed.md)."""
from __future__ import annotations

import importlib

import pytest
import torch

from glmix_viz.models import fuse_for_inference, load_demo_model

pytestmark = pytest.mark.skipif(
    not importlib.import_module("glmix_viz.models._fused").AVAILABLE,
    reason="this PyTorch has no oneDNN fused ops: there is no fused path to keep out of the graphs",
)


@pytest.fixture
def fused_calls(monkeypatch) -> list:
    """Grows by one at every fused convolution + residual add (every GLNet block has one)."""
    from glmix_viz.models import _fused

    calls = []
    conv_add = _fused._conv_add
    monkeypatch.setattr(_fused, "_conv_add", lambda *a: calls.append(1) or conv_add(*a))
    return calls


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches empty before and after (compiled code of other tests' models is not reused)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _demo_model():
    return load_demo_model()[0]


def _eager_fused(model, x, fused_calls) -> torch.Tensor:
    """``model(x)`` eagerly, checking that it took the fused path (and that no kernel refused)."""
    del fused_calls[:]
    out = model(x)
    assert fused_calls, "the eager forward did not take the fused path"
    assert model.fused_inference.enabled
    del fused_calls[:]
    return out


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_export_saves_loads_and_keeps_the_fused_path(which, tiny_model, fused_calls, tmp_path):
    model = tiny_model if which == "tiny" else _demo_model()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager = _eager_fused(model, x, fused_calls)
        exported = torch.export.export(model, (x,))
        assert not fused_calls  # the fused kernels never ran on export's fake tensors
        ops = [str(node.target) for node in exported.graph_module.graph.nodes if node.op == "call_function"]
        assert not [op for op in ops if "mkldnn" in op]
        n_convs = sum(type(m) is torch.nn.Conv2d for m in model.modules())
        assert ops.count("aten.conv2d.default") == n_convs  # each convolution, as a plain one
        path = tmp_path / "model.pt2"
        torch.export.save(exported, path)
        loaded = torch.export.load(path).module()
        assert (loaded(x) - eager).abs().max() < 1e-5
        again = _eager_fused(model, x, fused_calls)  # exporting left this model's fused path on
    assert torch.equal(again, eager)


def test_compile_has_no_graph_breaks_nor_recompiles_when_fusion_is_switched(tiny_model, fused_calls,
                                                                            fresh_dynamo):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager = _eager_fused(tiny_model, x, fused_calls)
        explained = torch._dynamo.explain(tiny_model)(x)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
        torch._dynamo.reset()

        graphs = []

        def backend(gm, example_inputs):  # records the graphs dynamo hands over, runs them as they are
            graphs.append(gm)
            return gm.forward

        compiled = torch.compile(tiny_model, backend=backend, fullgraph=True)
        outs = [compiled(x)]
        fuse_for_inference(tiny_model, False)
        outs.append(compiled(x))
        fuse_for_inference(tiny_model, True)
        outs.append(compiled(x))
        assert not fused_calls
        assert len(graphs) == 1  # the switch is not guarded on: one graph for all three calls
        assert "mkldnn" not in str(graphs[0].graph)
        for out in outs:
            assert (out - eager).abs().max() < 1e-5
        assert torch.equal(_eager_fused(tiny_model, x, fused_calls), eager)


@pytest.mark.slow  # inductor's first compile of even the tiny model takes ~50 s on a laptop CPU
def test_inductor_compiled_model_equals_eager(tiny_model, fused_calls, fresh_dynamo):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager = _eager_fused(tiny_model, x, fused_calls)
        compiled = torch.compile(tiny_model, fullgraph=True)  # fullgraph: a graph break is an error
        first, second = compiled(x), compiled(x)
        assert not fused_calls
        assert (first - eager).abs().max() < 1e-5
        assert torch.equal(second, first)
        assert torch.equal(_eager_fused(tiny_model, x, fused_calls), eager)
