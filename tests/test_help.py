"""Every option of both tools explains itself, states its default once, and each command shows examples."""
from __future__ import annotations

import argparse

import pytest

from glmix_viz import cli as viz_cli
from wsss import cli as wsss_cli


def _parsers():
    viz = viz_cli._parser()
    yield "glmix-viz", viz
    yield "glmix-viz evaluate", viz_cli._evaluate_parser()
    wsss = wsss_cli._parser()
    yield "glmix-wsss", wsss
    for action in wsss._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from ((f"glmix-wsss {name}", sub) for name, sub in action.choices.items())


@pytest.mark.parametrize("name,parser", list(_parsers()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_has_help_and_one_default(name, parser):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
    text = parser.format_help()
    for block in text.split("\n  -")[1:]:  # one option's entry each
        assert block.count("(default") <= 1, f"{name}: default stated twice in: -{block.strip()[:200]}"
    assert "examples:" in text and f"{name.split()[0]} " in text.split("examples:")[1]
