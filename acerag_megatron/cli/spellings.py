"""Long options under both spellings: `--output_prefix` and `--output-prefix` name the same option.

The trainer's flags follow AceRAG's training document (underscores), the converters' and the data
tools' the common command-line style (hyphens); a user who mixes them up should not be stopped.
The other spelling goes into the parser's option table only, so `--help`, the usage line and error
messages keep naming the documented one.
"""
from __future__ import annotations

import argparse


def other_spelling(option: str) -> str | None:
    """`--a_b` <-> `--a-b` for a long option with a separator in its name, else None."""
    if not option.startswith("--"):
        return None
    name = option[2:]
    if "_" in name and "-" in name:
        return None  # mixed spellings have no single other form
    if "_" in name:
        return "--" + name.replace("_", "-")
    if "-" in name:
        return "--" + name.replace("-", "_")
    return None


class BothSpellingsMixin:
    """For argparse.ArgumentParser subclasses: every long option is also accepted in its other spelling.

    The aliases are registered when parsing or help starts, so options added at any time (argument
    groups included) get them.
    """

    def parse_known_args(self, args=None, namespace=None):
        self.register_other_spellings()
        return super().parse_known_args(args, namespace)

    def format_usage(self):
        self.register_other_spellings()
        return super().format_usage()

    def format_help(self):
        self.register_other_spellings()
        return super().format_help()

    def register_other_spellings(self) -> None:
        """Map each long option's other spelling to its action; an option string already taken wins."""
        table = self._option_string_actions
        for action in self._actions:
            shown = []
            for option in action.option_strings:
                # An alias listed by the parser's builder (HfArgumentParser lists both) is kept in
                # the table but not shown, like the ones registered here.
                if option in shown or any(other_spelling(s) == option for s in shown):
                    continue
                shown.append(option)
                alias = other_spelling(option)
                if alias is not None and alias not in table:
                    table[alias] = action
            action.option_strings = shown

    def _get_option_tuples(self, option_string):
        # An abbreviation matches an option under both of its spellings; that is one option, not an
        # ambiguity (argparse would otherwise refuse `--output` for `--output-prefix`).
        seen, unique = set(), []
        for match in super()._get_option_tuples(option_string):
            if id(match[0]) not in seen:
                seen.add(id(match[0]))
                unique.append(match)
        return unique


class ToolParser(BothSpellingsMixin, argparse.ArgumentParser):
    """argparse for the data and inference tools: both spellings of every long option."""
