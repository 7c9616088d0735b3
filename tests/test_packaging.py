"""The wheel built from this tree carries every data file and template the code reads, and runs outside
the tree."""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _can_build_without_isolation() -> bool:
    try:
        major, minor = (int(v) for v in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1)  # bdist_wheel built in: no download needed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps`` of a copy of the tree (the build writes build/ and *.egg-info beside its
    input)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("glmix_viz", "wsss"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    build = ["--no-build-isolation"] if _can_build_without_isolation() else []  # else pip fetches setuptools
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", *build,
           "-w", str(dist), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = dist.glob("glmix_viz-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_every_data_file(wheel):
    with zipfile.ZipFile(wheel) as z:
        held = set(z.namelist())
    expected = {p.relative_to(ROOT).as_posix()
                for package in ("glmix_viz", "wsss") for folder in ("data", "templates")
                for p in (ROOT / package / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert len(expected) > 100  # the emoji sprites, the demo weights and image, the class mapping
    assert "wsss/templates/report.html" in expected  # glmix-wsss report's page
    assert not expected - held, sorted(expected - held)[:5]


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_tree(wheel, tmp_path):
    """A scratch venv with the wheel (dependencies seen from this environment) makes a tiny EmojiVOC."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    # dependencies from this environment: a plain path entry, so its editable-install hook is not run
    (purelib / "deps.pth").write_text("\n".join(sorted({sysconfig.get_paths()["purelib"],
                                                        sysconfig.get_paths()["platlib"]})) + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    where = subprocess.run([str(python), "-c",
                            "import wsss, glmix_viz; print(wsss.__file__, glmix_viz.__file__)"],
                           cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    assert str(ROOT) not in where and str(venv) in where  # the installed copy, not the source tree
    out = tmp_path / "ev"
    proc = subprocess.run([str(venv / "bin" / "glmix-wsss"), "make-emojivoc", "--train", "2", "--val", "1",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(out.rglob("*.jpg"))) == 3 and len(list(out.rglob("SegmentationClass/*.png"))) == 3
