"""timm's own model tests (``tests/test_models.py`` of the installed timm's sdist), run on every GLNet model.

timm's file is imported unchanged. While it is imported, its ``list_models``
sees only the GLNet models, and ``glnet`` counts as one of the timm modules
whose models have ``forward_intermediates`` (``FEAT_INTER_FILTERS``), so its
per-model tests are parametrized with our models under timm's own exclusion
filters and size limits. The tests whose parameters are all GLNet models are
collected here; timm's tests of its own named models are not. Tests with no
GLNet model (``pretrained=True`` listings: the GLNet weights are local files)
are left out.

torchvision's FX feature extractor, which timm's FX tests use, names each
traced node by scanning the names of all earlier ones, so its cost grows with
the square of the model's depth: about 10 s per FX test for the GLNets with
30 blocks (the hybrid layout: 4G, 9G, 16G and their token-label variants),
150 s of the module's 300 s on 2 cores. Those FX tests are marked ``slow``
(CI runs them; ``-m "not slow"`` skips them); the smaller models run every
test, and tests/test_models.py traces a tiny hybrid model.

The sdist is downloaded once with ``pip download`` into
``$GLMIX_TIMM_SDIST`` (default ``~/.cache/glmix-viz/timm-sdist``); the module
fails, never skips, if it cannot be had.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Callable, List

import pytest
import timm

import glmix_viz.models.glnet as _glnet

from . import conftest

GLNET_MODULE = _glnet.__name__.rsplit(".", 1)[-1]  # the module name timm's registry files the models under
GLNET_MODELS = frozenset(timm.list_models(module=GLNET_MODULE))
SLOW_FX_BLOCKS = 16  # models with more blocks run timm's FX tests only without -m "not slow"
_BUILTIN_MARKS = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings", "timeout"}


def _sdist_dir() -> Path:
    root = os.environ.get("GLMIX_TIMM_SDIST")
    if root:
        return Path(root)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "glmix-viz" / "timm-sdist"


def timm_tests_file(version: str = timm.__version__) -> Path:
    """``tests/test_models.py`` of timm ``version``'s sdist, downloaded (``pip download``) if not cached."""
    folder = _sdist_dir() / f"timm-{version}"
    target = folder / "tests" / "test_models.py"
    if target.is_file():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
               "--no-binary", ":all:", f"timm=={version}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        archives = sorted(Path(tmp).glob("timm-*.tar.gz"))
        if proc.returncode or not archives:
            raise RuntimeError(f"could not download timm {version}'s sdist ({' '.join(cmd)}):\n"
                               f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        unpacked = Path(tmp) / f"timm-{version}"
        if not (unpacked / "tests" / "test_models.py").is_file():
            raise RuntimeError(f"timm {version}'s sdist has no tests/test_models.py")
        try:
            unpacked.rename(folder)  # atomic: a concurrent run may have won the race
        except OSError:
            if not target.is_file():
                raise
    return target


def _glnet_only(real: Callable[..., List[str]]) -> Callable[..., List[str]]:
    """timm's ``list_models``, restricted to the GLNet models, with ``glnet`` in any list of modules."""

    def list_models(filter="", module="", *args, **kwargs) -> List[str]:
        if module:
            module = [module] if isinstance(module, str) else list(module)
            module.append(GLNET_MODULE)
        return [n for n in real(filter, module, *args, **kwargs) if n.split(".")[0] in GLNET_MODELS]

    return list_models


def load_timm_tests(path: Path) -> ModuleType:
    """Import timm's test file with its ``list_models`` seeing only the GLNet models."""
    source = path.read_text()
    marks = set(re.findall(r"pytest\.mark\.(\w+)", source)) - _BUILTIN_MARKS
    for mark in sorted(marks):  # timm's markers (its pyproject.toml), so --strict-markers accepts them
        conftest.active_pytest_config().addinivalue_line("markers", f"{mark}: timm's own test marker")
    real = timm.list_models
    timm.list_models = _glnet_only(real)
    try:
        spec = importlib.util.spec_from_file_location("timm_tests_test_models", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        timm.list_models = real
    return module


def _model_params(fn) -> list:
    for mark in getattr(fn, "pytestmark", ()):
        if mark.name == "parametrize" and mark.args[0] == "model_name":
            return [getattr(p, "values", (p,))[0] for p in mark.args[1]]  # a name or a pytest.param
    return []


def _num_blocks(name: str) -> int:
    model = timm.create_model(name.split(".")[0], device="meta")
    return sum(len(stage.blocks) for stage in model.stages)


def _mark_slow(fn, slow_models: frozenset) -> None:
    """Mark ``fn``'s parametrizations with the models in ``slow_models`` ``slow`` (in our copy of timm's
    module only)."""
    marks = []
    for mark in fn.pytestmark:
        if mark.name == "parametrize" and mark.args[0] == "model_name":
            values = [pytest.param(p, marks=pytest.mark.slow) if p.split(".")[0] in slow_models else p
                      for p in mark.args[1]]
            mark = pytest.mark.parametrize("model_name", values, *mark.args[2:], **mark.kwargs).mark
        marks.append(mark)
    fn.pytestmark = marks


_timm_tests = load_timm_tests(timm_tests_file())
TIMM_TESTS = sorted(
    name for name, fn in vars(_timm_tests).items()
    if name.startswith("test_") and callable(fn)
    and (params := _model_params(fn)) and all(p.split(".")[0] in GLNET_MODELS for p in params)
)
FIXTURES = [name for name, obj in vars(_timm_tests).items()
            if type(obj).__name__ == "FixtureFunctionDefinition" or hasattr(obj, "_pytestfixturefunction")]
_DEEP = frozenset(name for name in GLNET_MODELS if _num_blocks(name) > SLOW_FX_BLOCKS)
for _name in TIMM_TESTS:
    if "_fx" in _name:
        _mark_slow(getattr(_timm_tests, _name), _DEEP)
globals().update({name: getattr(_timm_tests, name) for name in TIMM_TESTS + FIXTURES})


def test_timm_suite_covers_every_glnet_model_and_the_intermediates_tests():
    """The collection above is not empty by accident: every model is in the forward tests, and the
    ``forward_intermediates`` tests (timm's ``FEAT_INTER_FILTERS``) run too."""
    assert {"test_model_forward", "test_model_default_cfgs", "test_model_forward_intermediates",
            "test_prune_intermediate_layers_contract", "test_model_forward_fx"} <= set(TIMM_TESTS)
    assert {p.split(".")[0] for p in _model_params(_timm_tests.test_model_forward)} == GLNET_MODELS
    assert set(_model_params(_timm_tests.test_model_forward_intermediates)) == GLNET_MODELS
    assert {p.split(".")[0] for p in _model_params(_timm_tests.test_model_forward_fx)} == GLNET_MODELS
    assert "glnet_4g" in _DEEP and "glnet_stl" not in _DEEP
