"""Google Fit REST: OAuth token refresh, data-source catalog and dataset client (no Dagster)."""
