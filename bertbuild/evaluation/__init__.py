"""Scoring, validation, latency, gates and the results table: everything that judges an engine."""
