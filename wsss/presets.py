"""Pipeline settings: the model-agnostic default, a checkpoint's preset, overrides, and where each came from.

Settings are read and shown flat, one key per stage and per field, in the
order the stages run (``evidence.scales``, ``slots.mix``, ``background``...);
a stage's own key holds its kind (``"SlotRefineParams"``, ``"ConfidentRegions"``)
or ``None`` when it is off. :func:`resolve_settings` layers them:

1. ``default``: :class:`~wsss.pipeline.PseudoLabelConfig`'s defaults (model-agnostic);
2. ``preset NAME``: the settings a checkpoint carries under ``"pseudo_labels"``
   (the bundled demo model carries the ones measured for it on EmojiVOC), which
   the model loader copies to ``model.pretrained_cfg["pseudo_labels"]`` as
   timm's ``pretrained_cfg`` carries crop and normalisation;
3. overrides (the command's flags);
4. ``derived``: what :meth:`~wsss.pipeline.PseudoLabelConfig.for_model` fills in from the
   model (slot blocks from its depth, the CAM's fitted scales from its input size).

A checkpoint's preset is ``{"name": str, "measured": str, "settings": {key: value}}``;
keys it leaves out keep the default. See docs/wsss.md, "Presets".
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch.nn as nn

from glmix_viz.fields import FieldError

from .evidence import EvidenceConfig
from .pipeline import PseudoLabelConfig
from .refine import BackgroundParams, ConfidentRegions, CRFParams, SlotRefineParams
from .regions import RegionParams
from .slot_classifier import SlotClassifierParams

__all__ = ["PRESET_KEY", "STAGE_KINDS", "Resolved", "flatten", "unflatten", "model_preset",
           "resolve_settings", "make_preset"]

PRESET_KEY = "pseudo_labels"

#: Each stage of :class:`~wsss.pipeline.PseudoLabelConfig` and the settings objects it takes, in run order.
STAGE_KINDS: Dict[str, Tuple[type, ...]] = {
    "evidence": (EvidenceConfig,),
    "slots": (SlotRefineParams,),
    "classifier": (SlotClassifierParams,),
    "background": (BackgroundParams, ConfidentRegions),
    "crf": (CRFParams,),
    "regions": (RegionParams,),
}
_KINDS = {kind.__name__: kind for kinds in STAGE_KINDS.values() for kind in kinds}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def flatten(config: PseudoLabelConfig) -> Dict[str, Any]:
    """``{"evidence": "EvidenceConfig", "evidence.scales": [...], ..., "regions": None}`` (JSON values)."""
    flat: Dict[str, Any] = {}
    for stage in STAGE_KINDS:
        value = getattr(config, stage)
        flat[stage] = None if value is None else type(value).__name__
        if value is not None:
            flat.update({f"{stage}.{f.name}": _plain(getattr(value, f.name)) for f in fields(value)})
    return flat


def _field_name(key: str, kind: Optional[str] = None) -> str:
    """``"slots.mix"`` -> ``"SlotRefineParams.mix"`` (the name library errors and the CLI's table use)."""
    stage, _, name = key.partition(".")
    kind = kind or STAGE_KINDS[stage][0].__name__
    return f"{kind}.{name}" if name else f"PseudoLabelConfig.{stage}"


def _value(value: Any) -> Any:
    """A JSON value as the dataclass field holds it (lists -> tuples)."""
    return tuple(value) if isinstance(value, list) else value


def unflatten(flat: Mapping[str, Any], given: Mapping[str, str] = {}) -> PseudoLabelConfig:
    """The config of flat settings (missing stages and fields: their defaults).

    Args:
        flat: as :func:`flatten` makes.
        given: keys set on purpose (by a flag): such a key for a stage that is
            off, or for a field its kind does not have, is an error naming it;
            other stray keys (a default's field of a stage now off) are dropped.

    Raises:
        FieldError: an unknown stage kind, or a field given for a stage that is off.
    """
    unknown = sorted(k for k in flat if k.partition(".")[0] not in STAGE_KINDS)
    if unknown:
        raise FieldError(unknown[0], [flat[unknown[0]]], f"unknown setting; expected one of the stages "
                         f"{', '.join(STAGE_KINDS)} or their fields")
    stages: Dict[str, Any] = {}
    for stage, kinds in STAGE_KINDS.items():
        kind_name = flat.get(stage, _default_kind(stage))
        keys = [k for k in flat if k.startswith(stage + ".")]
        if kind_name is None:
            stray = [k for k in keys if k in given]
            if stray:
                raise FieldError((_field_name(stray[0]), _field_name(stage)), [flat[stray[0]], "off"],
                                 f"set, but the {stage} stage is off")
            stages[stage] = None
            continue
        if kind_name not in {k.__name__ for k in kinds}:
            raise FieldError(_field_name(stage), [kind_name],
                             f"expected one of {', '.join(k.__name__ for k in kinds)} or None (off)")
        kind = _KINDS[kind_name]
        names = {f.name for f in fields(kind)}
        stray = [k for k in keys if k.partition(".")[2] not in names and k in given]
        if stray:
            raise FieldError(_field_name(stray[0], kind_name), [flat[stray[0]]],
                             f"{kind_name} has no such setting ({', '.join(sorted(names))})")
        kwargs = {k.partition(".")[2]: _value(flat[k]) for k in keys if k.partition(".")[2] in names}
        stages[stage] = kind(**kwargs)
    return PseudoLabelConfig(**stages)


def _default_kind(stage: str) -> Optional[str]:
    value = getattr(PseudoLabelConfig(), stage)
    return None if value is None else type(value).__name__


def model_preset(model: nn.Module) -> Optional[Dict[str, Any]]:
    """The preset the model's checkpoint carries (``pretrained_cfg["pseudo_labels"]``), or ``None``.

    Raises:
        ValueError: it is not ``{"name", "settings": {...}}``.
    """
    preset = (getattr(model, "pretrained_cfg", None) or {}).get(PRESET_KEY)
    if preset is None:
        return None
    if not isinstance(preset, dict) or not isinstance(preset.get("settings"), dict):
        raise ValueError(f"the checkpoint's {PRESET_KEY!r} entry is not a preset: expected "
                         "{'name': str, 'settings': {setting: value}}")
    return preset


@dataclass(frozen=True)
class Resolved:
    """Settings ready to run, and where each came from.

    Attributes:
        config: with every model-derived setting filled in.
        sources: flat key (as :func:`flatten`) -> ``"default"``, ``"preset NAME"``,
            an override's source (e.g. ``"flag --slot-mix"``) or ``"derived: ..."``.
        preset: the preset's name, or ``None``.
    """

    config: PseudoLabelConfig
    sources: Dict[str, str]
    preset: Optional[str] = None

    def rows(self) -> List[Tuple[str, Any, str]]:
        """``[(key, value, source), ...]`` in stage order."""
        return [(key, value, self.sources.get(key, "default")) for key, value in flatten(self.config).items()]


def resolve_settings(model: nn.Module, overrides: Mapping[str, Any] = {}, *, use_preset: bool = True,
                     override_sources: Mapping[str, str] = {}) -> Resolved:
    """Defaults -> the model's preset -> ``overrides`` -> settings derived from the model.

    Args:
        model: the GLNet the pseudo-labels come from.
        overrides: flat keys (see :func:`flatten`) and values; a stage's key
            turns it on (its kind's name) or off (``None``).
        use_preset: apply the preset the model's checkpoint carries.
        override_sources: how each override is shown (default ``"override"``).

    Raises:
        ValueError: the preset or an override is not valid (names the setting).
    """
    flat = flatten(PseudoLabelConfig())
    sources = {key: "default" for key in flat}
    preset = model_preset(model) if use_preset else None
    name = None
    if preset is not None:
        name = str(preset.get("name", "checkpoint"))
        try:
            unflatten(preset["settings"], given=preset["settings"])
        except ValueError as err:
            raise ValueError(f"the preset {name!r} the checkpoint carries: {err} (use_preset=False ignores "
                             "it)") from None
        flat.update(preset["settings"])
        sources.update({key: f"preset {name}" for key in preset["settings"]})
    for key, value in overrides.items():
        flat[key] = _plain(value)
        sources[key] = override_sources.get(key, "override")
    config = unflatten(flat, given={k: "" for k in overrides})
    derived = config.for_model(model)
    before, after = flatten(config), flatten(derived)
    for key, value in after.items():
        if before.get(key) != value:
            sources[key] = _DERIVED.get(key, "derived from the model")
    return Resolved(derived, {key: sources.get(key, "default") for key in after}, name)


_DERIVED = {
    "slots.blocks": "derived: the GLMix blocks at 0.2, 0.5 and 1 of the model's depth",
    "classifier.blocks": "derived: every GLMix block of the model",
    "evidence.view_side": "derived: training input size / sqrt(mean training crop area)",
}


def make_preset(name: str, config: PseudoLabelConfig, measured: str) -> Dict[str, Any]:
    """A preset to store in a checkpoint under :data:`PRESET_KEY`: every setting of ``config``.

    Settings left ``None`` to be derived (e.g. ``classifier.blocks``) stay
    derived for whoever loads it.
    """
    return {"name": name, "measured": measured, "settings": flatten(config)}
