"""Every option of every command says what it does and, where it has one, its default (issue 13,
item 6): a newcomer reads ``--help``, not the source."""

from __future__ import annotations

import argparse

from runtime.cli import _subparsers, build_parser

_NO_HELP_NEEDED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def _shown(default: object) -> list[str]:
    """The ways a default may be written in help: as is, and a float without a trailing .0."""
    forms = [str(default)]
    if isinstance(default, float):
        forms.append(f"{default:g}")
    return forms


def test_every_option_has_help_that_shows_its_default() -> None:
    parser = build_parser()
    problems = []
    for sub in [parser, *_subparsers(parser)]:
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, _NO_HELP_NEEDED):
                continue
            where = f"{sub.prog} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                problems.append(f"{where}: no help")
                continue
            text = formatter._expand_help(action)
            default = action.default
            if default in (None, False, argparse.SUPPRESS):
                continue
            if "default" not in text or not any(form in text for form in _shown(default)):
                problems.append(f"{where}: the help does not show the default {default!r}")
    assert not problems, "\n".join(problems)
