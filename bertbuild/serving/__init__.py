"""Serving a run's engines: the Triton model repository every bundle carries (`triton.py`, `repository.py`)."""
