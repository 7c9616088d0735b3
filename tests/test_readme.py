"""The README's examples run as written (no official weights needed), and its facts are current."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(index, tmp_path, monkeypatch):
    """Each block on its own, from an empty folder, with an empty torch hub cache (a fresh install)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)  # noqa: S102
    assert not [p for p in tmp_path.iterdir() if p.name != "torch"]  # examples write nothing


def test_readme_names_no_machine_paths_and_no_tracker():
    assert not re.findall(r"(?<![~\w])/(?:work|root|tmp|home/\w+)/", README)
    assert not re.findall(r"\bissues?\b", README, re.I)


def test_readme_test_count_is_current():
    stated = re.search(r"about (\d+) tests", README)
    assert stated, "the Tests section states how many tests there are"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", str(ROOT / "tests")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    collected = int(re.search(r"(\d+) tests? collected", proc.stdout).group(1))
    assert abs(collected - int(stated.group(1))) <= 0.1 * collected, (collected, stated.group(0))
