"""The one parser of ``FITONFHIR_*`` settings; nothing reads them at import time.

With nothing configured you get the embedded default (sandbox on loopback, stores under
``FITONFHIR_HOME``). Once a Google client id is configured the deployment is a production one: Google's
endpoints are Google's real URLs, never the sandbox, and every setting that production needs and is
missing is reported in one :class:`ConfigError` at start-up (code location, onboarding app, CLI).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"
GOOGLE_FIT_URL = "https://www.googleapis.com/fitness/v1/"
GOOGLE_HEALTH_URL = "https://health.googleapis.com/"  # the discovery document's rootUrl; paths start v4/
SOURCES = ("google-fit", "google-health")  # issue 13: where a new onboarding's data comes from
HEALTH_VIEWS = ("list", "reconcile")
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
    """A FITONFHIR_* variable holds a value we cannot use, or is missing; the message names every one."""


IMPORT, ONBOARDING = "import", "onboarding"  # who asks: the import (code location, CLI) or the onboarding app


def missing_settings(env: Mapping[str, str], consumer: str = IMPORT) -> list[str]:
    """The variables a production deployment (a Google client id is set) needs and does not have.

    The embedded default needs none. Onboarding also needs its public URL and a shared state key: a
    key file made on the fly would differ between replicas and silently break every callback.
    """

    def unset(name: str) -> bool:
        return not env.get(name, "").strip()

    missing: list[str] = []
    if env.get("FITONFHIR_FHIR_AUTH", "none") == "bearer" and unset("FITONFHIR_FHIR_TOKEN"):
        missing.append("FITONFHIR_FHIR_TOKEN (FITONFHIR_FHIR_AUTH=bearer needs it)")
    client_id = env.get("FITONFHIR_GOOGLE_CLIENT_ID", "").strip()
    if not client_id or client_id == SANDBOX_CLIENT_ID:
        return missing
    production = " (a Google client id is set: production needs it)"
    required = ["FITONFHIR_GOOGLE_CLIENT_SECRET", "FITONFHIR_FHIR_URL"]
    if consumer == ONBOARDING:
        required += ["FITONFHIR_ONBOARDING_URL", "FITONFHIR_STATE_SECRET"]
    missing += [name + production for name in required if unset(name)]
    if unset("FITONFHIR_VAULT_KEY") and unset("FITONFHIR_KEYVAULT_URL"):
        missing.append("FITONFHIR_VAULT_KEY or FITONFHIR_KEYVAULT_URL" + production)
    return missing


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
    postgres_url: str = field(default="", repr=False)  # users table on PostgreSQL (holds a password)
    # throughput of a run (pipeline/runner.py)
    import_workers: int = 4  # users fetched side by side in one run, and as many user-days written
    project_max_requests_per_minute: int = 3000  # Fit API ceiling shared by those users; <= 0 unlimited
    fhir_verify: bool = False  # True: re-read FHIR even when a user-day's messages did not change
    # one run per user at a time (issue 9): the users table's import lease
    user_lease_wait_seconds: int = 300  # how long a run waits for another run's lease before failing the user
    user_lease_ttl_seconds: int = 120  # a lease not renewed for this long (its run was killed) is free again
    # Google Health API v4 (issue 13)
    default_source: str = "google-fit"  # source of new onboardings: google-fit | google-health
    google_health_url: str = GOOGLE_HEALTH_URL
    health_view: str = "list"  # list (every source's points) | reconcile (Google's one merged stream)
    health_data_types: tuple[str, ...] = ()  # kebab-case Health types; empty = the nine Fit equivalents

    @property
    def uses_sandbox(self) -> bool:
        return self.google_token_uri.startswith(self.sandbox_url)

    @property
    def eventhub_enabled(self) -> bool:
        return bool(self.eventhub_connection_string or self.eventhub_namespace)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, consumer: str = IMPORT, check_required: bool = True
    ) -> Settings:
        """Parse ``env`` (default: the process environment); ``check_required`` refuses a production
        deployment with settings missing (off only for a part of the settings already checked whole)."""
        env = os.environ if env is None else env
        missing = missing_settings(env, consumer) if check_required else []
        if missing:
            raise ConfigError("missing settings: " + ", ".join(missing))
        sandbox = env.get("FITONFHIR_SANDBOX_URL", DEFAULT_SANDBOX_URL).rstrip("/")
        production = env.get("FITONFHIR_GOOGLE_CLIENT_ID", SANDBOX_CLIENT_ID) != SANDBOX_CLIENT_ID
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
        default_source = env.get("FITONFHIR_DEFAULT_SOURCE", "google-fit").strip() or "google-fit"
        if default_source not in SOURCES:
            raise ConfigError(
                f"FITONFHIR_DEFAULT_SOURCE must be google-fit or google-health, got {default_source!r}"
            )
        health_view = env.get("FITONFHIR_HEALTH_VIEW", "list").strip() or "list"
        if health_view not in HEALTH_VIEWS:
            raise ConfigError(f"FITONFHIR_HEALTH_VIEW must be list or reconcile, got {health_view!r}")
        return cls(
            home=Path(env.get("FITONFHIR_HOME", ".fitonfhir")).resolve(),
            sandbox_url=sandbox,
            google_client_id=env.get("FITONFHIR_GOOGLE_CLIENT_ID", SANDBOX_CLIENT_ID),
            google_client_secret=env.get("FITONFHIR_GOOGLE_CLIENT_SECRET", SANDBOX_CLIENT_SECRET),
            google_auth_uri=env.get(
                "FITONFHIR_GOOGLE_AUTH_URI", GOOGLE_AUTH_URI if production else f"{sandbox}/o/oauth2/v2/auth"
            ),
            google_token_uri=env.get(
                "FITONFHIR_GOOGLE_TOKEN_URI", GOOGLE_TOKEN_URI if production else f"{sandbox}/token"
            ),
            google_revoke_uri=env.get(
                "FITONFHIR_GOOGLE_REVOKE_URI", GOOGLE_REVOKE_URI if production else f"{sandbox}/revoke"
            ),
            google_fit_url=env.get(
                "FITONFHIR_GOOGLE_FIT_URL", GOOGLE_FIT_URL if production else f"{sandbox}/fitness/v1/"
            ).rstrip("/")
            + "/",
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
            postgres_url=env.get("FITONFHIR_POSTGRES_URL", "").strip(),
            import_workers=_int(env, "FITONFHIR_IMPORT_WORKERS", 4, minimum=1),
            project_max_requests_per_minute=_int(
                env, "FITONFHIR_PROJECT_MAX_REQUESTS_PER_MINUTE", 3000, minimum=-(2**31)
            ),
            fhir_verify=_bool(env, "FITONFHIR_FHIR_VERIFY", default=False),
            user_lease_wait_seconds=_int(env, "FITONFHIR_USER_LEASE_WAIT_SECONDS", 300),
            user_lease_ttl_seconds=_int(env, "FITONFHIR_USER_LEASE_TTL_SECONDS", 120, minimum=1),
            default_source=default_source,
            google_health_url=env.get(
                "FITONFHIR_GOOGLE_HEALTH_URL", GOOGLE_HEALTH_URL if production else f"{sandbox}/"
            ).rstrip("/")
            + "/",
            health_view=health_view,
            health_data_types=_list(env, "FITONFHIR_HEALTH_DATA_TYPES"),
        )
