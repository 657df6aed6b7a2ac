"""A number as a table cell, the same way in every table and report: missing values are a dash."""

from __future__ import annotations


def number(value: float | None, spec: str, suffix: str = "") -> str:
    """`value` formatted with `spec` (then `suffix`, e.g. a unit), or "-" where there is no value."""
    return "-" if value is None else format(value, spec) + suffix
