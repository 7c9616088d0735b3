"""glmix-viz: see and use what a GLMix vision backbone learned.

Importing the package registers the GLNet family with timm::

    import glmix_viz, timm
    model = timm.create_model("glnet_stl",
                              pretrained=True)  # reads ~/.cache/torch/hub/checkpoints/glnet_stl.pth

The import itself is light (no torch, no timm), so that ``glmix-viz --help``
answers at once: the models are registered as soon as timm is imported, or at
once if it already is, and the names below load on first use.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first access)
_LAZY = {
    "GLNet": ".models",
    "GLNetTokenLabel": ".models",
    "GLMixBlock": ".models",
    "OFFICIAL_MODELS": "._names",
    "default_checkpoint_path": ".models",
    "load_checkpoint": ".models",
    "load_demo_model": ".models",
    "DEMO_IMAGE": "._names",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


def _register_models() -> None:
    importlib.import_module(".models", __name__)  # its import registers the GLNets with timm


class _LoaderThenRegister(importlib.abc.Loader):
    """Runs timm's own loader, then registers the GLNets (the models module imports timm)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _register_models()

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: timm's loader answers
        return getattr(self._loader, name)


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    """Once: when ``timm`` is first imported, load it as usual and register the GLNets right after."""

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _LoaderThenRegister(spec.loader)
        return spec


if "timm" in sys.modules:
    _register_models()
elif not any(isinstance(f, _RegisterWhenTimmLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenTimmLoads())
