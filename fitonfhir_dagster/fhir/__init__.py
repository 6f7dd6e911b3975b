"""FHIR R4 REST client (domain code, no Dagster): versioned, conditional and Bundle writes with retries."""

from fitonfhir_dagster.fhir.auth import AzureAdAuth, BearerTokenAuth, FhirAuth, auth_from_settings
from fitonfhir_dagster.fhir.bundles import (
    EntryResult,
    conditional_put_entry,
    delete_entry,
    identifier_query,
    post_entry,
    put_entry,
    same_content,
)
from fitonfhir_dagster.fhir.fhir_client import FhirClient, UpsertSummary
from fitonfhir_dagster.fhir.fhir_errors import (
    FhirAuthError,
    FhirError,
    FhirTransportError,
    InvalidResource,
    PreconditionFailed,
    ResourceConflict,
)

__all__ = [
    "AzureAdAuth",
    "BearerTokenAuth",
    "EntryResult",
    "FhirAuth",
    "FhirAuthError",
    "FhirClient",
    "FhirError",
    "FhirTransportError",
    "InvalidResource",
    "PreconditionFailed",
    "ResourceConflict",
    "UpsertSummary",
    "auth_from_settings",
    "conditional_put_entry",
    "delete_entry",
    "identifier_query",
    "post_entry",
    "put_entry",
    "same_content",
]
