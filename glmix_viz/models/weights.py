"""Which weights a model name and an optional file stand for: a file, the hub cache, or the bundled demo.

A model is never silently replaced: a named model without weights is an
error naming the file expected. Only when *no* model was named does the
default (e.g. ``glnet_stl``) give way to the bundled demo model, and the
result says so (``fallback``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple, Union

import torch.nn as nn

from .._names import OFFICIAL_MODELS
from ._checkpoint import (
    MODEL_CARD_URL,
    best_matching_model,
    default_checkpoint_path,
    load_checkpoint,
    read_checkpoint,
    unwrap_state_dict,
)
from .demo import DEMO_MODEL, load_demo_model

_logger = logging.getLogger(__name__)

__all__ = ["Weights", "WeightsNotFoundError", "find_weights", "load_model"]

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from.

    Attributes:
        model: registered model name; ``None`` (with a ``path``): the one the
            file fits best, found when it is loaded (:func:`load_model`).
        path: the checkpoint file; ``None`` for the bundled demo model's weights.
        fallback: no model was named and the default had no weights, so the
            bundled demo model stands in.
    """

    model: Optional[str]
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
        model: the model asked for; ``None``: with a ``checkpoint``, the model
            the file fits best (found by :func:`load_model`), else ``default_model``.
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
        return Weights(model, path)
    name = model or default_model
    if name is None or name == DEMO_MODEL:
        return Weights(DEMO_MODEL, None)
    hub_file = default_checkpoint_path(name)
    if hub_file.is_file():
        return Weights(name, hub_file)
    if model is None:
        return Weights(DEMO_MODEL, None, fallback=True)
    raise WeightsNotFoundError(name, hub_file)


def load_model(weights: Weights, *, num_classes: Optional[int] = None, weights_only: bool = True,
               seed: int = 0) -> Tuple[nn.Module, Weights, str]:
    """Build the model ``weights`` stands for and load them, in eval mode: the one loader of both tools.

    Args:
        weights: from :func:`find_weights`.
        num_classes: classifier outputs when the file has no classifier of its
            own (default: the model's); a file's own head always decides.
        weights_only: see :func:`~glmix_viz.models.read_checkpoint`.
        seed: initialises the untrained fallback when the demo weights are not bundled.

    Returns:
        ``(model, weights with the model name resolved, one line saying what was loaded)``.

    Raises:
        ValueError: the file is not readable, or fits no model (the message names the best fit).
    """
    import timm

    if weights.path is None:
        model, what = load_demo_model(seed=seed)
        return model, replace(weights, model=DEMO_MODEL), what
    contents = read_checkpoint(weights.path, weights_only=weights_only)  # read once: guess, head, load
    name = weights.model
    if name is None:
        name, score = best_matching_model(unwrap_state_dict(contents), (DEMO_MODEL, *OFFICIAL_MODELS))
        _logger.info("%s: architecture %s (%.0f%% of keys fit)", weights.path, name, 100 * score)
    state_dict = unwrap_state_dict(contents, name)
    if "head.weight" in state_dict:
        num_classes = int(state_dict["head.weight"].shape[0])
    model = timm.create_model(name, **({} if num_classes is None else {"num_classes": num_classes}))
    load_checkpoint(model, weights.path, name=name, checkpoint=contents)
    return model.eval(), replace(weights, model=name), f"{name} from {weights.path}"
