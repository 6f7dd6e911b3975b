"""Thin Dagster layer: each asset loops over its partition keys and calls the pipeline functions."""

import warnings

import dagster as dg

# Backfill policies (beta) are deliberate; keep the console readable.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
