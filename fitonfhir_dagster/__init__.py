"""Fit on FHIR for Dagster: Google Fit data into FHIR R4, day by day, per user."""
