"""Argument types and the parser class every command shares: a bad flag value is one line and exit 2.

argparse already turns a type error into exit 2; these types say what range a
number must be in, so `--batch-size 0` stops at the parser instead of deep in a
library, and `OneLineParser` keeps argparse's message to one line (its default
prints the whole usage block first). `storage_option` reads `KEY=VALUE` for a store.
"""

from __future__ import annotations

import argparse
import math
import os

import yaml


def at_least(minimum: int | float, kind: type = int):
    """An argparse `type`: a finite number of `kind` that is >= `minimum` (never NaN nor infinity)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
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
        # Every mistake reads `bertbuild: error: ...`, whichever (sub)command's parser found it.
        root, _, command = self.prog.partition(" ")
        where = f"{command}: " if command else ""
        message = " ".join(message.split())
        self.exit(2, f"{root}: error: {where}{message} (see {self.prog} --help)\n")


def output_file(path, flag: str):
    """A file the command will write: refused (one UserInputError line) before any work if it cannot be.

    It must not be a directory, and the folder it goes in must be, or be creatable as, a writable directory.
    """
    from pathlib import Path

    from bertbuild.errors import UserInputError
    from bertbuild.preflight import writable_directory

    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{flag} {path}: is a directory; name a file to write")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserInputError(f"{flag} {path}: the file is not writable by this user")
    writable_directory(path.parent if str(path.parent) else ".", f"{flag} {path}: its folder")
    return path


def text_file(path, flag: str, what: str = "a UTF-8 text file"):
    """A text file the command will read: it must exist, be a file, be readable and be UTF-8 (one line if not)."""
    from pathlib import Path

    from bertbuild.errors import UserInputError

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{flag} {path}: not found")
    if not path.is_file():
        raise UserInputError(f"{flag} {path}: is a directory, expected {what}" if path.is_dir()
                             else f"{flag} {path}: not a regular file, expected {what}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError as exc:
        raise UserInputError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the 1 MiB boundary
            raise UserInputError(f"{flag} {path}: not {what} (byte {exc.start} is not UTF-8)") from None
    if b"\0" in head:
        raise UserInputError(f"{flag} {path}: not {what} (it holds NUL bytes: a binary file?)")
    return path
