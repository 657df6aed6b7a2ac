"""Presentation only: plain-text tables, plots and markdown reports of numbers computed elsewhere.

The data comes from `evaluation/`, `artifacts/` and `fleet/`; nothing below
those packages imports this one, so a module that computes never pulls in
matplotlib or report wording. Callers are the commands, the Prefect tasks and
flows, and `fleet/`. Imports nothing itself: take the module you need.
"""
