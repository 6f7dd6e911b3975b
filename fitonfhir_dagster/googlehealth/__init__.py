"""Google Health API v4: data-type catalog, wire format, errors and the per-user client (no Dagster)."""
