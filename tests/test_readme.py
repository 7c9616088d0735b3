"""The examples in README.md and docs/ run as written without official weights; their facts are current."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README_PATH, *DOCS]
MAX_README_BYTES = 16_384  # ~16 KB: the README is for users; the rest lives in docs/


def _python_blocks(text: str) -> list:
    return re.findall(r"```python\n(.*?)```", text, re.S)


BLOCKS = _python_blocks(README)
DOC_BLOCKS = [(path.name, index, block)
              for path in DOCS for index, block in enumerate(_python_blocks(path.read_text()))]


def _run_block(source: str, label: str, tmp_path: Path, monkeypatch) -> None:
    """One block on its own, from an empty folder, with an empty torch hub cache (a fresh install)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(source, label, "exec"), namespace)  # noqa: S102
    assert not [p for p in tmp_path.iterdir() if p.name != "torch"]  # examples write nothing


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2  # official weights, capturing slots
    assert len(BLOCKS) + len(DOC_BLOCKS) >= 3  # + the WSSS pipeline from Python (docs/wsss.md)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(index, tmp_path, monkeypatch):
    _run_block(BLOCKS[index], f"README.md python block {index}", tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name, index, source", DOC_BLOCKS, ids=[f"{n}-{i}" for n, i, _ in DOC_BLOCKS])
def test_docs_python_block_runs_as_written(name, index, source, tmp_path, monkeypatch):
    _run_block(source, f"docs/{name} python block {index}", tmp_path, monkeypatch)


def test_readme_is_short():
    assert len(README.encode()) <= MAX_README_BYTES, "move details to docs/ and link them"


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_pages_name_no_machine_paths_and_no_tracker(path):
    text = path.read_text()
    assert not re.findall(r"(?<![~\w])/(?:work|root|tmp|home/\w+)/", text)
    assert not re.findall(r"\bissues?\b", text, re.I)


def _relative_links(text: str) -> list:
    """Targets of markdown links and images that are not URLs or in-page anchors, anchors stripped."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code (link text in backticks still leaves its link)
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"(?m)^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", text)  # reference definitions
    out = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http:, https:, mailto:, ...; anchors in the same page
        out.append(target.split("#", 1)[0])
    return out


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_point_to_files(path):
    missing = [t for t in _relative_links(path.read_text()) if not (path.parent / t).exists()]
    assert not missing, f"{path.name} links to files that do not exist: {missing}"


def test_every_doc_is_linked_from_the_readme_and_links_back():
    linked = set(_relative_links(README))
    for doc in DOCS:
        assert f"docs/{doc.name}" in linked, f"the README links docs/{doc.name}"
        assert "../README.md" in _relative_links(doc.read_text()), f"docs/{doc.name} links back to the README"


def test_layout_tree_lists_every_module():
    """Each module of glmix_viz and wsss appears in docs/layout.md's tree, under its package
    (``models/glnet.py``)."""
    tree = re.search(r"```\n(glmix_viz/.*?)```", (ROOT / "docs" / "layout.md").read_text(), re.S)
    assert tree, "docs/layout.md has the tree of the code"
    listed, top = set(), ""
    for line in tree.group(1).splitlines():
        if re.match(r"\w+/", line):  # a top-level folder: glmix_viz/, wsss/
            top = line.split("/")[0]
        names = re.findall(r"([\w/]+\.py)\b", line.split("  ", 2)[1] if line.startswith("  ") else "")
        listed.update(f"{top}/{name}" for name in names)
    modules = {p.relative_to(ROOT).as_posix() for package in ("glmix_viz", "wsss")
               for p in (ROOT / package).rglob("*.py") if p.name != "__init__.py"}
    assert not sorted(modules - listed), f"add to docs/layout.md's tree: {sorted(modules - listed)}"


def test_readme_test_count_is_current():
    stated = re.search(r"about (\d+) tests", README)
    assert stated, "the Tests section states how many tests there are"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", str(ROOT / "tests")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    collected = int(re.search(r"(\d+) tests? collected", proc.stdout).group(1))
    assert abs(collected - int(stated.group(1))) <= 0.1 * collected, (collected, stated.group(0))
