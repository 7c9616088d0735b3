"""Errors about a setting's value that name the setting, so that each front end can name it its own way.

A library raises :class:`FieldError` with the dataclass fields it is about
(``"EvidenceConfig.scales"``); the command-line tools translate those into
their flags (``--scales``) with :func:`FieldError.with_names`. Library
messages never name a flag.
"""
from __future__ import annotations

from typing import Mapping, Sequence, Union

__all__ = ["FieldError"]


class FieldError(ValueError):
    """A bad value of one or more settings.

    Attributes:
        fields: qualified field names, e.g. ``("SlotClassifierParams.background",)``.
        problem: what is wrong, without the names (e.g. ``"expected a number in [0, 1)"``).
    """

    def __init__(self, fields: Union[str, Sequence[str]], values: Sequence, problem: str) -> None:
        self.fields = (fields,) if isinstance(fields, str) else tuple(fields)
        self.values = tuple(values)
        self.problem = problem
        super().__init__(self._text({f: f for f in self.fields}))

    def _text(self, names: Mapping[str, str]) -> str:
        parts = [f"{names.get(f, f)} {_show(v)}" for f, v in zip(self.fields, self.values)]
        return f"{', '.join(parts)}: {self.problem}"

    def with_names(self, names: Mapping[str, str]) -> ValueError:
        """The same error with the fields renamed (``{"EvidenceConfig.scales": "--scales"}``); others kept."""
        return ValueError(self._text(names))


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
