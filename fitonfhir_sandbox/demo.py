"""`make demo`: onboard sandbox users and import their last days through Dagster, then report.

The report ends with one JSON line (users, days, points, device_messages, observations_written,
observations_total) so scripts and CI can read what happened.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from fitonfhir_dagster.defs.partitions import USERS
from fitonfhir_dagster.defs.run_requests import range_run_request
from fitonfhir_dagster.settings import Settings

from .accounts import sub_for_email
from .local_services import demo_start_date, local_services, prepare_dagster_home
from .onboarding_driver import onboard_sandbox_user, sandbox_email

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class UserReport:
    key: str
    email: str
    days: int = 0
    points: int = 0
    messages: int = 0
    observations_written: int = 0
    dead_letters: int = 0


@dataclass
class DemoReport:
    first_day: date
    last_day: date
    users: list[UserReport] = field(default_factory=list)
    points_by_type: Counter[str] = field(default_factory=Counter)
    observations_total: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "users": len(self.users),
            "days": (self.last_day - self.first_day).days + 1,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "points": sum(u.points for u in self.users),
            "points_by_type": dict(sorted(self.points_by_type.items())),
            "device_messages": sum(u.messages for u in self.users),
            "observations_written": sum(u.observations_written for u in self.users),
            "observations_total": self.observations_total,
            "dead_letters": sum(u.dead_letters for u in self.users),
        }


def _materialized(result: dg.ExecuteInProcessResult, asset: str, key: str) -> int:
    """Sum of one metadata value over the run's materializations of ``asset``."""
    total = 0
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if event.asset_key == dg.AssetKey(asset) and key in materialization.metadata:
            total += int(materialization.metadata[key].value)  # type: ignore[arg-type]
    return total


def run_demo(n_users: int = 3, n_days: int = 7, echo=print, source: str = "google-fit") -> DemoReport:
    from fitonfhir_dagster.definitions import defs
    from fitonfhir_dagster.pipeline.step_stores import StepStores
    from fitonfhir_dagster.stores.factory import open_users_table

    demo_start_date(n_days)
    settings = Settings.from_env()
    prepare_dagster_home(settings)
    today = datetime.now(UTC).date()
    report = DemoReport(first_day=today - timedelta(days=n_days), last_day=today - timedelta(days=1))
    with local_services(settings) as running, dg.DagsterInstance.get() as instance:
        definitions = defs()
        echo(f"sandbox (Google + FHIR): {running.sandbox_url}   onboarding app: {running.onboarding_url}")
        users = open_users_table(running)
        prefix = "demo-user" if source == "google-fit" else f"demo-{source}-user"  # own accounts per source
        for i in range(1, n_users + 1):
            email = sandbox_email(i, prefix)
            onboard_sandbox_user(running.onboarding_url, i, email=email)
            row = users.find_by_google_sub(sub_for_email(email))
            assert row is not None, "onboarding finished but no users row exists"
            report.users.append(UserReport(row.key, email))
            echo(f"onboarded {email} as user {row.key} (Patient/{row.patient_id}, {row.source})")
        keys = [u.key for u in report.users]
        known = set(instance.get_dynamic_partitions(USERS))
        instance.add_dynamic_partitions(USERS, [k for k in keys if k not in known])

        templates = dg.materialize(
            [definitions.resolve_assets_def("medtech_templates")], instance=instance, run_config=QUIET
        )
        assert templates.success
        job = definitions.resolve_job_def("user_day_import")
        for user in report.users:
            request = range_run_request(report.first_day, report.last_day, user.key, user.key, run_key="demo")
            echo(f"running user_day_import for {user.key}, {report.first_day} .. {report.last_day}")
            result = job.execute_in_process(
                instance=instance, tags=request.tags, raise_on_error=False, run_config=QUIET
            )
            if not result.success:
                raise SystemExit(
                    f"the Dagster run for {user.key} failed (run id {result.run_id}); see the Dagster UI"
                )
            user.messages = _materialized(result, "device_messages", "messages")
            user.observations_written = _materialized(result, "fhir_observations", "created") + _materialized(
                result, "fhir_observations", "updated"
            )
            user.dead_letters = _materialized(result, "fhir_observations", "dead_lettered")

        fill_from_archive(report, StepStores.open(settings))
        report.observations_total = observations_on_server(running)
    return report


def fill_from_archive(report: DemoReport, stores) -> None:
    """Days and points per user and data type, read back from the raw archive (shared with ``stack``)."""
    from fitonfhir_dagster.pipeline.datasets import load_datasets
    from fitonfhir_dagster.sources import source_named

    for user in report.users:
        day = report.first_day
        while day <= report.last_day:
            document = load_datasets(stores, day.isoformat(), user.key)
            if document is not None:
                user.days += 1
                counts = source_named(document.get("source", "google-fit")).points_by_type(document)
                user.points += sum(counts.values())
                report.points_by_type.update(counts)
            day += timedelta(days=1)


def observations_on_server(settings: Settings) -> int:
    from fitonfhir_dagster.fhir.fhir_client import FhirClient

    bundle = FhirClient.from_settings(settings).search_bundle("Observation", {"_summary": "count"})
    return int(bundle.get("total", 0))


def print_report(report: DemoReport, echo=print) -> None:
    echo("")
    echo(f"Imported {report.first_day} .. {report.last_day} (UTC days)")
    echo(
        f"{'user':<14} {'account':<26} {'days':>4} {'points':>8} {'messages':>8} {'obs written':>11} {'dead':>5}"
    )
    for u in report.users:
        echo(
            f"{u.key:<14} {u.email:<26} {u.days:>4} {u.points:>8} {u.messages:>8}"
            f" {u.observations_written:>11} {u.dead_letters:>5}"
        )
    echo("")
    echo(f"{'data type':<34} {'points':>8}")
    for data_type, count in sorted(report.points_by_type.items()):
        echo(f"{data_type:<34} {count:>8}")
    echo(f"Observations on the FHIR server: {report.observations_total}")
    echo(json.dumps(report.summary(), sort_keys=True))
