"""The code location: everything in ``defs/``, loaded by Dagster's own folder loader (``dg`` entry point)."""

import warnings
from pathlib import Path

import dagster as dg

# The backfill policy and pools are beta/preview APIs, chosen deliberately; keep the console readable.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
