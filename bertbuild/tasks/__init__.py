"""Prefect tasks: each a short function over pure code; the cached ones are `bertbuild.steps.cached_step`s."""

from __future__ import annotations


def cached_steps() -> dict[str, object]:
    """Every cached step of the build, by name: `bertbuild.steps.CachedStep` (what keys it, what it may reach)."""
    import importlib

    from bertbuild.steps import CachedStep

    found = {}
    for name in ("model", "squad", "precision", "engines"):
        module = importlib.import_module(f"{__name__}.{name}")
        for value in vars(module).values():
            step = value if isinstance(value, CachedStep) else getattr(value, "step", None)
            if isinstance(step, CachedStep):
                found[step.name] = step
    return found
