"""``OUT/manifest.json``: what made a folder of pseudo-masks, checked when a run resumes into it.

A run writes the manifest before its first mask. A later run into the same
folder resumes only if it would make the masks the same way (same model
weights, head, labels and configuration); otherwise it stops and names what
differs, so that old and new masks are never mixed. ``overwrite`` starts the
folder afresh instead.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from glmix_viz import __version__
from glmix_viz.fileio import atomic_write

__all__ = ["MANIFEST", "COMPARED", "RunFolderError", "file_sha256", "make_manifest", "differences",
           "prepare_run_folder"]

_logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# What decides a mask's pixels; the rest (paths, split, version, save_scores) may change between resumes.
COMPARED = ("model", "checkpoint_sha256", "head", "labels", "config", "runner")


_REDO = "redo them, or choose another output folder"


class RunFolderError(ValueError):
    """A run folder that cannot be resumed; ``overwrite`` (whatever a front end calls it) is the way out.

    Attributes:
        problem: what is wrong with the folder.
        remedy: what overwriting does about it.
    """

    def __init__(self, problem: str, remedy: str) -> None:
        self.problem, self.remedy = problem, remedy
        super().__init__(f"{problem}; overwrite to {remedy}")

    def with_flag(self, flag: str) -> ValueError:
        """The same error naming the front end's switch (``"--overwrite"``)."""
        return ValueError(f"{self.problem}; {flag} to {self.remedy}")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and paths as JSON values (what a reread manifest holds)."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def make_manifest(*, model: str, checkpoint: Optional[Path], head: str, labels: Dict[str, Any], config: Any,
                  run: Dict[str, Any], runner: Optional[Dict[str, Any]] = None,
                  sources: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The manifest of a run.

    Args:
        model: registered model name.
        checkpoint: its weights file (hashed), or ``None`` for the bundled demo weights.
        head: ``"own"`` or ``"imagenet"``.
        labels: where the image-level labels come from (source, file).
        config: the pipeline's configuration (a dataclass), every setting resolved.
        run: the rest, recorded but not compared (paths, split, device...).
        runner: the run's settings that change the masks but are not the pipeline's (``max_side``).
        sources: where each setting came from (preset, default, derived, flag; recorded, not compared).
    """
    from glmix_viz.models.demo import DEMO_WEIGHTS

    weights = checkpoint if checkpoint is not None else DEMO_WEIGHTS
    return {
        "tool": "glmix-wsss pseudo-labels",
        "version": __version__,
        "model": model,
        "checkpoint": str(checkpoint) if checkpoint is not None else "bundled demo model",
        "checkpoint_sha256": file_sha256(weights) if Path(weights).is_file() else None,
        "head": head,
        "labels": _plain(labels),
        "config": _plain(config),
        "runner": _plain(runner or {}),
        "sources": _plain(sources or {}),
        "run": _plain(run),
    }


def differences(old: Dict[str, Any], new: Dict[str, Any], keys: Sequence[str] = COMPARED) -> List[str]:
    """``"key.sub: old -> new"`` for every compared value that differs (nested dicts walked)."""
    out: List[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{where}.{k}")
        elif a != b:
            out.append(f"{where}: {json.dumps(a)} -> {json.dumps(b)}")

    for key in keys:
        walk(old.get(key), new.get(key), key)
    return out


def prepare_run_folder(out: Path, manifest: Dict[str, Any], *, overwrite: bool = False,
                       outputs: Sequence[str] = ("*.png", "scores/*.npz"), write: bool = True) -> None:
    """Check ``out`` against ``manifest`` before a run, then record it.

    Args:
        out: the run's folder (may not exist yet).
        manifest: :func:`make_manifest` of this run.
        overwrite: remove the outputs of an earlier run (``outputs`` globs)
            instead of resuming.
        write: write the manifest (only one process of a distributed run does).

    Raises:
        RunFolderError: the folder holds masks made otherwise (names what
            differs), or masks without a manifest, and ``overwrite`` is off.
    """
    out = Path(out)
    path = out / MANIFEST
    found = [p for pattern in outputs for p in out.glob(pattern) if not p.name.startswith(".")]
    if overwrite:
        if write:
            for p in found:
                p.unlink(missing_ok=True)
            if found:
                _logger.info("%s: removed %d files of an earlier run (overwrite)", out, len(found))
    elif path.is_file():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            raise RunFolderError(f"{path}: not a readable manifest ({err})", "start afresh") from None
        changed = differences(old if isinstance(old, dict) else {}, manifest)
        if changed:
            shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise RunFolderError(f"{out} holds masks made with other settings ({shown})", _REDO)
    elif found:
        raise RunFolderError(f"{out} holds {len(found)} masks or scores but no {MANIFEST} (made by an older "
                             "version or another tool)", _REDO)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n"))
