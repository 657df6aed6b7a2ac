"""Inference backends: each turns a model file into a `Runner`."""
