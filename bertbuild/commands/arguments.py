"""Argument types and the parser class every command shares: a bad flag value is one line and exit 2.

argparse already turns a type error into exit 2; these types say what range a
number must be in, so `--batch-size 0` stops at the parser instead of deep in a
library, and `OneLineParser` keeps argparse's message to one line (its default
prints the whole usage block first). `storage_option` reads `KEY=VALUE` for a store.
"""

from __future__ import annotations

import argparse

import yaml


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


def storage_option(text: str) -> tuple[str, object]:
    """An argparse `type` for `--storage-option KEY=VALUE`.

    VALUE stays text, except YAML's true/false/null, numbers, and `{...}` or
    `[...]` (so `anon=true` is a bool): a secret such as `a#b` or `!x` must not
    be reinterpreted.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000), "
                                         f"got {text!r}")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return key, value
    structured = isinstance(parsed, (dict, list)) and value.strip()[:1] in ("{", "[")
    scalar = parsed is None or isinstance(parsed, (bool, int, float))
    return key, parsed if (structured or (scalar and value.strip())) else value


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
