"""The notebooks: saved without outputs, and each runs top to bottom and shows its figures."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_fig4_slots", "02_slots_across_depths", "03_slots_across_checkpoints")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_saved_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_shows_figures(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    from PIL import Image

    monkeypatch.delenv("MPLBACKEND", raising=False)  # conftest's Agg would hide the kernel's inline figures
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # run from an empty folder: the notebooks must not depend on the working directory
    resources = {"metadata": {"path": str(tmp_path)}}
    client = NotebookClient(nb, kernel_name="python3", timeout=300, resources=resources)
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not [t for t in stderr if "Traceback" in t]
    images = [
        Image.open(io.BytesIO(base64.b64decode(o.data["image/png"])))
        for o in outputs
        if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})
    ]
    # each notebook shows its uint8 figure and the matplotlib Figure (notebook 1 also the hard grouping)
    assert len(images) >= (3 if name.startswith("01") else 2)
    assert all(min(im.size) >= 100 for im in images)
    assert not list(tmp_path.iterdir())  # and writes nothing
