"""The notebooks: saved without outputs, and each runs top to bottom and shows its figures."""
from __future__ import annotations

import ast
import base64
import io
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_fig4_slots", "02_slots_across_depths", "03_slots_across_checkpoints")
WITH_SETTINGS = NAMES[:2]  # the notebooks that take IMAGE, MODEL and CHECKPOINT
SETTINGS = ("IMAGE", "MODEL", "CHECKPOINT")


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _first_code_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.cell_type == "code")


def _execute(nb: nbformat.NotebookNode, folder: Path) -> nbformat.NotebookNode:
    """Run ``nb`` in place in a kernel whose working directory is ``folder``."""
    from nbclient import NotebookClient

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MPLBACKEND", raising=False)  # conftest's Agg would hide the kernel's inline figures
        resources = {"metadata": {"path": str(folder)}}
        NotebookClient(nb, kernel_name="python3", timeout=300, resources=resources).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _text(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed: streams, text results and errors."""
    parts = []
    for o in _outputs(nb):
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type == "error":
            parts.append(f"{o.ename}: {o.evalue}")
        elif "text/plain" in o.get("data", {}):
            parts.append(o.data["text/plain"])
    return "\n".join(parts)


def _images(nb: nbformat.NotebookNode) -> list:
    from PIL import Image

    return [
        Image.open(io.BytesIO(base64.b64decode(o.data["image/png"])))
        for o in _outputs(nb)
        if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})
    ]


def _assert_ran_and_showed_figures(nb: nbformat.NotebookNode, name: str) -> None:
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not [t for t in stderr if "Traceback" in t]
    images = _images(nb)
    # each notebook shows its uint8 figure and the matplotlib Figure (notebook 1 also the hard grouping)
    assert len(images) >= (3 if name.startswith("01") else 2)
    assert all(min(im.size) >= 100 for im in images)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """``executed(name)``: the notebook run with its own settings from an empty folder, once per module."""
    runs: dict = {}

    def run(name: str):
        if name not in runs:
            # run from an empty folder: the notebooks must not depend on the working directory
            folder = tmp_path_factory.mktemp(f"run_{name}")
            runs[name] = (_execute(_read(name), folder), folder)
        return runs[name]

    return run


@pytest.mark.parametrize("name", NAMES)
def test_notebook_saved_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", WITH_SETTINGS)
def test_notebook_settings_in_first_code_cell(name):
    """IMAGE, MODEL and CHECKPOINT are set at the top, to None (the bundled image and model)."""
    cell = _first_code_cell(_read(name))
    values = {
        target.id: node.value
        for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
        for target in node.targets if isinstance(target, ast.Name)
    }
    for setting in SETTINGS:
        assert setting in values, f"{name}: the first code cell does not set {setting}"
        assert isinstance(values[setting], ast.Constant) and values[setting].value is None


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_shows_figures(name, executed):
    nb, folder = executed(name)
    _assert_ran_and_showed_figures(nb, name)
    assert not list(folder.iterdir())  # and writes nothing


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_prints_no_progress_warning(name, executed):
    """tqdm.auto (imported by timm) warns "IProgress not found" in a kernel without ipywidgets."""
    nb, _ = executed(name)
    text = _text(nb)
    assert "IProgress not found" not in text
    assert "TqdmWarning" not in text


@pytest.mark.slow
@pytest.mark.parametrize("name", WITH_SETTINGS)
def test_notebook_honours_image_model_checkpoint(name, tmp_path):
    """With IMAGE, MODEL and CHECKPOINT set, the notebook runs that model's weights on that image."""
    import numpy as np
    import timm
    import torch
    from PIL import Image

    inputs, folder = tmp_path / "inputs", tmp_path / "run"
    inputs.mkdir()
    folder.mkdir()
    image = inputs / "stripes.png"
    yy, xx = np.mgrid[0:96, 0:200]
    rgb = np.stack([(xx * 255 // 199), (yy // 12 % 2) * 255, np.full_like(xx, 90)], axis=-1)
    Image.fromarray(rgb.astype(np.uint8)).save(image)
    checkpoint = inputs / "tiny.pth"
    # test_glnet has 4 GLMix blocks, the demo model 10
    torch.save(timm.create_model("test_glnet").state_dict(), checkpoint)

    nb = _read(name)
    cell = _first_code_cell(nb)
    settings = {"IMAGE": repr(str(image)), "MODEL": repr("test_glnet"), "CHECKPOINT": repr(str(checkpoint))}
    lines = cell.source.splitlines()
    for setting, value in settings.items():
        (pos,) = [i for i, line in enumerate(lines) if line.startswith(f"{setting} = ")]
        lines[pos] = f"{setting} = {value}"
    cell.source = "\n".join(lines)

    _execute(nb, folder)
    _assert_ran_and_showed_figures(nb, name)
    text = _text(nb)
    assert f"test_glnet from {checkpoint}" in text
    assert "glnet_demo" not in text
    assert "image stripes.png" in text
    assert "(224, 352, 3)" not in text  # the bundled photo's view
    if name.startswith("01"):
        assert "4 GLMix blocks" in text
    assert not list(folder.iterdir())
