"""Which weights a model name and an optional file stand for: a file, the hub cache, or the bundled demo.

A model is never silently replaced: a named model without weights is an
error naming the file expected. Only when *no* model was named does the
default (e.g. ``glnet_stl``) give way to the bundled demo model, and the
result says so (``fallback``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ._checkpoint import MODEL_CARD_URL, default_checkpoint_path
from .demo import DEMO_MODEL

__all__ = ["Weights", "WeightsNotFoundError", "find_weights"]

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from.

    Attributes:
        model: registered model name.
        path: the checkpoint file; ``None`` for the bundled demo model's weights.
        fallback: no model was named and the default had no weights, so the
            bundled demo model stands in.
    """

    model: str
    path: Optional[Path]
    fallback: bool = False

    @property
    def label(self) -> str:
        """The file, or ``"bundled demo model"``: for logs and for the outputs' metadata."""
        return str(self.path) if self.path is not None else "bundled demo model"


class WeightsNotFoundError(FileNotFoundError):
    """A named model has no weights where they are looked for.

    Attributes:
        model: the model named.
        expected: the hub-cache file that was looked for.
    """

    def __init__(self, model: str, expected: Path) -> None:
        self.model, self.expected = model, expected
        super().__init__(
            f"no weights for model {model!r}: expected {expected}. Download them from {MODEL_CARD_URL} to "
            f"that path or pass a checkpoint file; {DEMO_MODEL!r} is bundled and needs no download"
        )


def find_weights(model: Optional[str] = None, checkpoint: Optional[PathLike] = None, *,
                 default_model: Optional[str] = None) -> Weights:
    """Resolve a model name and an optional checkpoint to the weights to load.

    Args:
        model: the model asked for; ``None``: ``default_model``.
        checkpoint: a file; it must exist. Without one, the hub cache
            (``default_checkpoint_path(model)``) is used, and ``glnet_demo``
            uses its bundled weights.
        default_model: the model when none is named. If its weights are not
            in the hub cache, the bundled demo model stands in (``fallback``);
            ``None``: the bundled demo model itself.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist ("no such file").
        WeightsNotFoundError: a named model's weights are not in the hub cache.
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        return Weights(model or default_model or DEMO_MODEL, path)
    name = model or default_model
    if name is None or name == DEMO_MODEL:
        return Weights(DEMO_MODEL, None)
    hub_file = default_checkpoint_path(name)
    if hub_file.is_file():
        return Weights(name, hub_file)
    if model is None:
        return Weights(DEMO_MODEL, None, fallback=True)
    raise WeightsNotFoundError(name, hub_file)
