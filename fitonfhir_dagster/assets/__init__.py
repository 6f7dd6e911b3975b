"""Thin Dagster layer: each asset loops over its partition keys and calls the pipeline functions."""
