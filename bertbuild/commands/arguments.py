"""Argument types and the parser class every command shares: a bad flag value is one line and exit 2.

argparse already turns a type error into exit 2; these types say what range a
number must be in, so `--batch-size 0` stops at the parser instead of deep in a
library, and `OneLineParser` keeps argparse's message to one line (its default
prints the whole usage block first).
"""

from __future__ import annotations

import argparse


def at_least(minimum: int | float, kind: type = int):
    """An argparse `type`: a number of `kind` that is >= `minimum`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum} (got {value})")
        return value

    parse.__name__ = f"{kind.__name__} >= {minimum}"
    return parse


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
