"""What the command-line tools share for ``--help``: each option's default shown once."""
from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


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
