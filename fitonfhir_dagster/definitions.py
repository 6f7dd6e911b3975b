"""The code location: assets, checks, the import job, automation and the one resource."""

from __future__ import annotations

import warnings

import dagster as dg

from .assets.templates import medtech_templates
from .assets.user_days import user_day_steps
from .automation import build_automation
from .config import Settings
from .resources import FitOnFhirResource

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

_settings = Settings.from_env()


user_day_import_job = dg.define_asset_job(
    "user_day_import",
    selection=dg.AssetSelection.assets(user_day_steps),
    executor_def=dg.in_process_executor,
    description="Fetch, archive and convert Google Fit data for a range of (day, user) keys.",
)

users_sensor, daily_import_schedule, intraday_refresh_schedule = build_automation(
    user_day_import_job,
    _settings.start_date,
    _settings.initial_days,
    _settings.lookback_days,
    _settings.daily_batch_size,
)

defs = dg.Definitions(
    assets=[user_day_steps, medtech_templates],
    jobs=[user_day_import_job],
    sensors=[users_sensor],
    schedules=[daily_import_schedule, intraday_refresh_schedule],
    resources={"fitonfhir": FitOnFhirResource()},
    executor=dg.in_process_executor,
)
