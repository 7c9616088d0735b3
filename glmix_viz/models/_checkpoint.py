"""Reading official GLNet checkpoint files from local disk.

The release's files (``NAME.pth``, linked as OneDrive pages from the model card
at https://github.com/rayleizhu/GLMix) are dicts holding the weights under
``"model"`` (``"model_ema"`` for ``glnet_16g``). Users download them by hand;
the convention is ``<torch hub dir>/checkpoints/NAME.pth`` (``$TORCH_HOME/hub``
or ``~/.cache/torch/hub``). Nothing here downloads.
"""
from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from .._names import MODEL_CARD_URL, OFFICIAL_MODELS
from ..untrusted import TorchScriptArchiveError, UntrustedPickleError, torch_load

__all__ = [
    "OFFICIAL_MODELS",
    "MODEL_CARD_URL",
    "default_checkpoint_path",
    "read_checkpoint",
    "unwrap_state_dict",
    "load_checkpoint",
    "checkpoint_num_classes",
    "best_matching_model",
]

_logger = logging.getLogger(__name__)

# Non-official registered models a file may be meant for.
_EXTRA_MODELS = ("glnet_demo", "test_glnet")
# Where the release keeps the weights inside the file, by model (default "model").
_STATE_DICT_KEY = {"glnet_16g": "model_ema"}
_WRAPPER_KEYS = ("model", "model_ema", "state_dict", "state_dict_ema")

PathLike = Union[str, Path]


def default_checkpoint_path(name: str) -> Path:
    """``<torch hub dir>/checkpoints/<name>.pth``; the hub dir follows ``TORCH_HOME``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{name}.pth"


def read_checkpoint(path: PathLike, *, weights_only: bool = True, mmap: bool = False) -> dict:
    """Load a checkpoint file onto the CPU.

    Args:
        path: the ``.pth`` file: ``torch.save``'s zip format, or the legacy
            pickle-stream and ``.tar`` formats.
        weights_only: run no code from the file: tensors, numpy arrays,
            containers, numbers and strings are read; objects of other classes
            (e.g. the release's ``args``) are replaced by inert
            :class:`~glmix_viz.untrusted.Skipped` placeholders
            (:func:`glmix_viz.untrusted.torch_load`). ``False`` unpickles
            everything with Python's full pickle, which lets the file run any
            code on this machine: only for files you made or fully trust.
        mmap: map the file's storages instead of reading them (zip format).

    Raises:
        FileNotFoundError: the file does not exist (names the path and the model card).
        UntrustedPickleError: (a ``ValueError``) the file cannot be read
            without running what it names (listed in the message).
        ValueError: the file is not a readable checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path}. Download the official weights from the model card "
            f"at {MODEL_CARD_URL} and save them there, or pass the path of your file."
        )
    try:
        if weights_only:
            obj, _ = torch_load(path, mmap=mmap)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=False,
                             mmap=mmap and zipfile.is_zipfile(path))
    except TorchScriptArchiveError:
        raise
    except UntrustedPickleError as err:
        raise UntrustedPickleError(f"cannot read checkpoint {path}: {err}") from err
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, ValueError,
            TypeError) as err:
        raise ValueError(f"cannot read checkpoint {path} (truncated or not a torch file?): {err}") from err
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of weights")
    return dict(obj)


def unwrap_state_dict(checkpoint: Mapping, model_name: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Take the weights out of a release-format dict, or accept a bare state dict.

    The key tried first is the one the release uses for ``model_name``
    (``"model_ema"`` for ``glnet_16g``, else ``"model"``), then
    ``"model"``, ``"model_ema"``, ``"state_dict"``. A ``"module."`` prefix
    (DistributedDataParallel) is removed.
    """
    preferred = _STATE_DICT_KEY.get(model_name or "", "model")
    for key in (preferred, *_WRAPPER_KEYS):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state_dict = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state_dict:
        raise ValueError(f"no tensors found in checkpoint; top-level keys: {sorted(checkpoint)[:10]}")
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def _signature(state_dict: Mapping[str, torch.Tensor]) -> set:
    return {(k, tuple(v.shape)) for k, v in state_dict.items()}


def best_matching_model(
    state_dict: Mapping[str, torch.Tensor], candidates: Iterable[str] = OFFICIAL_MODELS
) -> Tuple[str, float]:
    """Which registered model a state dict fits best.

    Builds each candidate on the ``meta`` device (no memory, no init cost) and
    scores the mean of the Jaccard overlaps of keys and of (key, shape) pairs,
    ignoring the classifier.

    Returns:
        ``(model name, score in [0, 1])``.
    """
    import timm

    def strip_head(sig: set) -> set:
        return {(k, s) for k, s in sig if not k.startswith(("head.", "tklb_aux_head."))}

    theirs = strip_head(_signature(state_dict))
    best = ("", -1.0)
    for name in candidates:
        with torch.device("meta"):
            ours = strip_head(_signature(timm.create_model(name).state_dict()))
        keys_theirs, keys_ours = {k for k, _ in theirs}, {k for k, _ in ours}
        score = 0.5 * len(theirs & ours) / max(1, len(theirs | ours)) + 0.5 * len(
            keys_theirs & keys_ours
        ) / max(1, len(keys_theirs | keys_ours))
        if score > best[1]:
            best = (name, score)
    return best


def _classifier_keys(model: nn.Module) -> Tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier", "head")
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    return tuple(f"{h}.{p}" for h in heads for p in ("weight", "bias"))


def checkpoint_num_classes(
    checkpoint: Mapping, model: nn.Module, name: Optional[str] = None
) -> Optional[int]:
    """Outputs of ``model``'s classifier as stored in ``checkpoint`` (``None``: the file has no such head).

    Args:
        checkpoint: a file's contents (:func:`read_checkpoint`) or a bare state dict.
        model: the GLNet it is meant for (names the classifier's keys).
        name: model name, for the release's key inside the file (see :func:`unwrap_state_dict`).
    """
    state_dict = unwrap_state_dict(checkpoint, model_name=name)
    keys = [k for k in _classifier_keys(model) if k in state_dict]
    return int(state_dict[keys[0]].shape[0]) if keys else None


def load_checkpoint(
    model: nn.Module,
    path: Optional[PathLike] = None,
    *,
    name: Optional[str] = None,
    weights_only: bool = True,
    num_classes: Optional[int] = None,
    checkpoint: Optional[Mapping] = None,
) -> nn.Module:
    """Load an official (or own) checkpoint into ``model``, strictly.

    Args:
        model: a GLNet.
        path: the file; default ``default_checkpoint_path(name)``.
        name: model name used for the default path and the release's key
            (default: the model's registered architecture).
        weights_only: see :func:`read_checkpoint`.
        num_classes: if it differs from the checkpoint's class count, the
            classifier is left as built (for fine-tuning) and all else loads.
        checkpoint: the file's contents if the caller has already read it
            (:func:`read_checkpoint`), so it is not read again; ``path`` then
            only names it in messages.

    Returns:
        ``model``, with the weights loaded in place (dtype cast to the model's).

    Raises:
        FileNotFoundError: no such file (the message gives the expected path).
        ValueError: the keys or shapes do not fit; names the model the file
            fits best and the first missing and unexpected keys.
    """
    name = name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if path is None:
        if not name:
            raise ValueError("pass path=..., or name=... to use the torch hub cache")
        path = default_checkpoint_path(name)
    if checkpoint is None:
        checkpoint = read_checkpoint(path, weights_only=weights_only)
    state_dict = unwrap_state_dict(checkpoint, model_name=name)

    own = model.state_dict()
    stored = checkpoint_num_classes(state_dict, model)
    if num_classes is not None and stored is not None and stored != num_classes:
        _logger.info("%s: checkpoint has %d classes, model %d: classifier left untrained", path, stored,
                     num_classes)
        head_keys = [k for k in _classifier_keys(model) if k in own]
        state_dict = {k: v for k, v in state_dict.items() if k not in head_keys}
        state_dict.update({k: own[k] for k in head_keys})

    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        fit, score = best_matching_model(state_dict, (*OFFICIAL_MODELS, *_EXTRA_MODELS))
        this = name or type(model).__name__
        advice = (
            f"It fits {fit} best ({score:.0%} of keys and shapes agree): load it as "
            f"timm.create_model({fit!r}) if that is the file you meant."
            if score >= 0.5
            else f"It fits none of the known GLNet models (closest: {fit}, {score:.0%} agree)."
        )
        raise ValueError(
            f"checkpoint {path} does not fit {this}: {len(missing)} missing keys "
            f"(first: {missing[:3]}), {len(unexpected)} unexpected (first: {unexpected[:3]}), "
            f"{len(wrong_shape)} with other shapes (first: {wrong_shape[:2]}). {advice}"
        )
    model.load_state_dict(state_dict, strict=True)
    _carry_settings(model, checkpoint)
    _logger.info("loaded %s into %s", path, name or type(model).__name__)
    return model


#: Entries of a checkpoint that describe its weights and travel into ``model.pretrained_cfg`` (as timm's
#: cfg carries crop and normalisation): the pipeline settings measured for it (see ``wsss.presets``).
CARRIED_KEYS = ("pseudo_labels",)


def _carry_settings(model: nn.Module, checkpoint: Mapping) -> None:
    """Record what the checkpoint says about its weights in ``model.pretrained_cfg`` (a new dict).

    A checkpoint written by ``glmix-wsss train`` gives its training input size
    (``config["input_size"]``), which then becomes the cfg's ``input_size``,
    and its training settings (``config``'s plain values, as ``train_config``);
    :data:`CARRIED_KEYS` are copied as they are.
    """
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    config = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    if isinstance(config, Mapping):
        cfg["train_config"] = {str(k): v for k, v in config.items()
                               if isinstance(v, (bool, int, float, str, type(None)))}
        size = config.get("input_size")
        if isinstance(size, int) and size > 0:
            cfg["input_size"] = (3, size, size)
    for key in CARRIED_KEYS:
        if isinstance(checkpoint, Mapping) and key in checkpoint:
            cfg[key] = checkpoint[key]
    model.pretrained_cfg = cfg
    if hasattr(model, "default_cfg"):
        model.default_cfg = cfg  # timm's alias
