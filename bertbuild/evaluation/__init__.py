"""Scoring, validation, latency and gates: everything that judges an engine (shown by `bertbuild.reporting`)."""
