"""The one place that reads ``FITONFHIR_*`` environment variables.

Every setting has an embedded default (sandbox on loopback, stores under ``FITONFHIR_HOME``) so the
project runs with no configuration at all; production backends switch on when their variables are set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"
SANDBOX_CLIENT_ID = "fitonfhir-sandbox-client"
SANDBOX_CLIENT_SECRET = "fitonfhir-sandbox-secret"

DEFAULT_SCOPES = tuple(
    "https://www.googleapis.com/auth/" + s
    for s in (
        "userinfo.profile",
        "fitness.activity.read",
        "fitness.body.read",
        "fitness.heart_rate.read",
        "fitness.blood_pressure.read",
        "fitness.blood_glucose.read",
        "fitness.oxygen_saturation.read",
        "fitness.body_temperature.read",
    )
)


class ConfigError(ValueError):
    """A FITONFHIR_* variable holds a value we cannot use; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "")
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    home: Path
    sandbox_url: str
    google_client_id: str
    google_client_secret: str = field(repr=False)
    google_auth_uri: str
    google_token_uri: str
    google_revoke_uri: str
    google_fit_url: str
    google_scopes: tuple[str, ...]
    stream_policy: str  # "merged" | "all"
    data_types: tuple[str, ...]  # empty = every type of the catalog
    page_limit: int
    max_requests_per_minute: int
    start_date: date
    initial_days: int
    lookback_days: int
    daily_batch_size: int
    retry_delay_seconds: int
    fhir_url: str
    fhir_auth: str  # "none" | "bearer" | "azure"
    fhir_token: str = field(repr=False)
    fhir_bundle_size: int
    vault_key: str = field(repr=False)
    eventhub_connection_string: str = field(repr=False)
    eventhub_namespace: str
    eventhub_name: str
    azure_storage_connection_string: str = field(repr=False)
    azure_tables_endpoint: str
    azure_blob_endpoint: str
    azure_blob_container: str
    keyvault_url: str
    template_style: str  # "standard" | "original"
    device_mapping_file: str  # optional MedTech device mapping to use instead of generated templates
    fhir_mapping_file: str  # optional MedTech FHIR mapping to use instead of generated templates
    identity_mode: str  # "patient" (reference the onboarded Patient) | "create" (MedTech Create mode)
    # onboarding app (onboarding_app/)
    onboarding_url: str = "http://127.0.0.1:8000"  # public base URL; callback = {this}/api/googlefit/callback
    redirect_urls: tuple[str, ...] = ()  # exact allow-list of caller redirect URLs
    anonymous_login: bool = True  # True: callers name the patient with external_id/external_system
    identity_providers: tuple[str, ...] = ()  # OIDC authorities trusted for bearer JWTs
    audience: str = ""  # required `aud` of bearer JWTs
    state_secret: str = field(default="", repr=False)  # HMAC key for OAuth state; "" = key file in home
    # throughput of a run (pipeline/runner.py)
    import_workers: int = 4  # users imported side by side in one run
    project_max_requests_per_minute: int = 3000  # Fit API ceiling shared by those users; <= 0 unlimited
    fhir_verify: bool = False  # True: re-read FHIR even when a user-day's messages did not change

    @property
    def uses_sandbox(self) -> bool:
        return self.google_token_uri.startswith(self.sandbox_url)

    @property
    def eventhub_enabled(self) -> bool:
        return bool(self.eventhub_connection_string or self.eventhub_namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        sandbox = env.get("FITONFHIR_SANDBOX_URL", DEFAULT_SANDBOX_URL).rstrip("/")
        policy = env.get("FITONFHIR_STREAMS", "merged")
        if policy not in ("merged", "all"):
            raise ConfigError(f"FITONFHIR_STREAMS must be 'merged' or 'all', got {policy!r}")
        fhir_auth = env.get("FITONFHIR_FHIR_AUTH", "none")
        if fhir_auth not in ("none", "bearer", "azure"):
            raise ConfigError(f"FITONFHIR_FHIR_AUTH must be none, bearer or azure, got {fhir_auth!r}")
        style = env.get("FITONFHIR_TEMPLATE_STYLE", "standard")
        if style not in ("standard", "original"):
            raise ConfigError(f"FITONFHIR_TEMPLATE_STYLE must be standard or original, got {style!r}")
        if bool(env.get("FITONFHIR_DEVICE_MAPPING")) != bool(env.get("FITONFHIR_FHIR_MAPPING")):
            raise ConfigError("set both FITONFHIR_DEVICE_MAPPING and FITONFHIR_FHIR_MAPPING, or neither")
        identity = env.get("FITONFHIR_IDENTITY_MODE", "patient")
        if identity not in ("patient", "create"):
            raise ConfigError(f"FITONFHIR_IDENTITY_MODE must be patient or create, got {identity!r}")
        raw_start = env.get("FITONFHIR_START_DATE", "2025-01-01")
        try:
            start = date.fromisoformat(raw_start)
        except ValueError as exc:
            raise ConfigError(f"FITONFHIR_START_DATE must be YYYY-MM-DD, got {raw_start!r}") from exc
        scopes = _list(env, "FITONFHIR_GOOGLE_SCOPES") or DEFAULT_SCOPES
        identity_providers = _list(env, "FITONFHIR_IDENTITY_PROVIDERS")
        audience = env.get("FITONFHIR_AUDIENCE", "").strip()
        # Anonymous unless identity providers are configured: the embedded default has no identity
        # provider, and a deployment that names one is authenticated without a second switch.
        anonymous = _bool(env, "FITONFHIR_ANONYMOUS_LOGIN", default=not identity_providers)
        if not anonymous and not (identity_providers and audience):
            raise ConfigError(
                "FITONFHIR_ANONYMOUS_LOGIN=false needs FITONFHIR_IDENTITY_PROVIDERS and FITONFHIR_AUDIENCE"
            )
        return cls(
            home=Path(env.get("FITONFHIR_HOME", ".fitonfhir")).resolve(),
            sandbox_url=sandbox,
            google_client_id=env.get("FITONFHIR_GOOGLE_CLIENT_ID", SANDBOX_CLIENT_ID),
            google_client_secret=env.get("FITONFHIR_GOOGLE_CLIENT_SECRET", SANDBOX_CLIENT_SECRET),
            google_auth_uri=env.get("FITONFHIR_GOOGLE_AUTH_URI", f"{sandbox}/o/oauth2/v2/auth"),
            google_token_uri=env.get("FITONFHIR_GOOGLE_TOKEN_URI", f"{sandbox}/token"),
            google_revoke_uri=env.get("FITONFHIR_GOOGLE_REVOKE_URI", f"{sandbox}/revoke"),
            google_fit_url=env.get("FITONFHIR_GOOGLE_FIT_URL", f"{sandbox}/fitness/v1/").rstrip("/") + "/",
            google_scopes=scopes,
            stream_policy=policy,
            data_types=_list(env, "FITONFHIR_DATA_TYPES"),
            page_limit=_int(env, "FITONFHIR_PAGE_LIMIT", 1000, minimum=1),
            max_requests_per_minute=_int(env, "FITONFHIR_MAX_REQUESTS_PER_MINUTE", 300),
            start_date=start,
            initial_days=_int(env, "FITONFHIR_INITIAL_DAYS", 30, minimum=1),
            lookback_days=_int(env, "FITONFHIR_LOOKBACK_DAYS", 3, minimum=1),
            daily_batch_size=_int(env, "FITONFHIR_DAILY_BATCH_SIZE", 25, minimum=1),
            retry_delay_seconds=_int(env, "FITONFHIR_RETRY_DELAY_SECONDS", 30),
            fhir_url=env.get("FITONFHIR_FHIR_URL", f"{sandbox}/fhir").rstrip("/"),
            fhir_auth=fhir_auth,
            fhir_token=env.get("FITONFHIR_FHIR_TOKEN", ""),
            fhir_bundle_size=_int(env, "FITONFHIR_FHIR_BUNDLE_SIZE", 500, minimum=1),
            vault_key=env.get("FITONFHIR_VAULT_KEY", ""),
            eventhub_connection_string=env.get("FITONFHIR_EVENTHUB_CONNECTION_STRING", ""),
            eventhub_namespace=env.get("FITONFHIR_EVENTHUB_NAMESPACE", ""),
            eventhub_name=env.get("FITONFHIR_EVENTHUB_NAME", "ingest"),
            azure_storage_connection_string=env.get("FITONFHIR_AZURE_STORAGE_CONNECTION_STRING", ""),
            azure_tables_endpoint=env.get("FITONFHIR_AZURE_TABLES_ENDPOINT", ""),
            azure_blob_endpoint=env.get("FITONFHIR_AZURE_BLOB_ENDPOINT", ""),
            azure_blob_container=env.get("FITONFHIR_AZURE_BLOB_CONTAINER", "fitonfhir"),
            keyvault_url=env.get("FITONFHIR_KEYVAULT_URL", ""),
            template_style=style,
            device_mapping_file=env.get("FITONFHIR_DEVICE_MAPPING", ""),
            fhir_mapping_file=env.get("FITONFHIR_FHIR_MAPPING", ""),
            identity_mode=identity,
            onboarding_url=env.get("FITONFHIR_ONBOARDING_URL", "http://127.0.0.1:8000").rstrip("/"),
            redirect_urls=_list(env, "FITONFHIR_REDIRECT_URLS"),
            anonymous_login=anonymous,
            identity_providers=identity_providers,
            audience=audience,
            state_secret=env.get("FITONFHIR_STATE_SECRET", ""),
            import_workers=_int(env, "FITONFHIR_IMPORT_WORKERS", 4, minimum=1),
            project_max_requests_per_minute=_int(
                env, "FITONFHIR_PROJECT_MAX_REQUESTS_PER_MINUTE", 3000, minimum=-(2**31)
            ),
            fhir_verify=_bool(env, "FITONFHIR_FHIR_VERIFY", default=False),
        )
