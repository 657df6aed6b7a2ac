"""Checkpoint and dataset acquisition: NGC, Google Drive, HTTP(S), local files.

Pure library code (no Prefect); `bertbuild.tasks.model.fetch_model` wraps it. See `acquire` for usage.
Imports nothing itself, so a module that needs one of its parts does not load them all.
"""
