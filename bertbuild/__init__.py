"""bertbuild: BERT QA checkpoint -> validated, gated inference engines."""

__version__ = "0.1.0"
