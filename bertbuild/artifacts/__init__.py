"""Publishing and downloading verified build bundles (no Prefect here; see `bertbuild/tasks/publish.py`).

Imports nothing: take each name from the module that defines it, so that importing one
module (say `artifacts.layout`) does not load the store, fsspec and every other module.
"""
