"""What the two command-line tools share: ``--help`` formatting, and how library errors read as flags."""
from __future__ import annotations

import argparse

__all__ = ["HelpFormatter", "check_model_flag", "device_from_flag", "weights_not_found"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already says ``(default...``.

    Flags (``store_true``), options without a default (``None``) and texts
    that state their default themselves get nothing appended; epilogs keep their
    line breaks (the examples).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("(default" in text or "default:" in text or action.default in (None, False, "", argparse.SUPPRESS)
                or not action.option_strings or action.nargs == 0):
            return text
        return f"{text} (default: %(default)s)"


def device_from_flag(name: str):
    """``--device`` as a ``torch.device`` (:func:`glmix_viz.devices.resolve_device`); errors name the flag."""
    from .devices import resolve_device

    try:
        return resolve_device(name)
    except ValueError as err:
        raise ValueError(f"--{err}") from None


def weights_not_found(err, demo_hint: str) -> ValueError:
    """A :class:`~glmix_viz.models.weights.WeightsNotFoundError` in the tools' words; ``demo_hint`` says
    how the tool runs the bundled demo model."""
    from ._names import MODEL_CARD_URL

    return ValueError(f"no weights for --model {err.model}: expected {err.expected}. Download them from "
                      f"{MODEL_CARD_URL} to that path, or pass --checkpoint FILE; {demo_hint}")


def check_model_flag(name) -> None:
    """``--model``: ``None`` or a registered GLNet, else an error listing them (imports timm)."""
    import timm

    import glmix_viz  # noqa: F401  (registers the GLNets)

    if name is not None and name not in timm.list_models("*glnet*"):
        raise ValueError(f"--model {name!r} is not a GLNet; choose from {timm.list_models('*glnet*')}")
