"""One user-day through each step, as plain functions the thin Dagster assets call."""
