"""Benchmark: one heavy user through the real runner (``pipeline.runner``): memory and time of the import.

The sandbox (Google OAuth + Fit + FHIR) runs in a process of its own (``fitonfhir sandbox``), so the
figures are the run process's: each figure runs in a fresh process of its own (its peak RSS is its own)
that onboards one ``+heavy<N>`` sandbox account and imports its last D complete UTC days through every
step (fit_datasets, device_messages, fhir_observations), like the ``user_day_import`` job does with one
user. Printed per figure: wall time, points and points/s, CPU seconds of the run process (its own work;
the rest of the wall time is spent waiting on the sandbox FHIR server, a SQLite stand-in that writes
about 1-2k Observations/s), Google calls per user-day, RSS before the run and at its peak; then one
JSON line.

Figures (default): 1 day x 50k points, 1 day x 100k points (twice as heavy), 30 days x 50k points.
Run: ``.venv/bin/python bench/heavy_user.py [--points 50000] [--days 30] [--only 1x1,1x2,30x1]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

FIGURES = {"1x1": (1, 1), "1x2": (1, 2), "30x1": (30, 1)}  # name -> (days, times --points)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_figure(url: str, days: int, points: int, work: Path) -> dict[str, Any]:
    """In this (fresh) process: onboard one heavy account, import its last ``days`` days."""
    from fitonfhir_dagster.fhir.fhir_client import FhirClient
    from fitonfhir_dagster.fitmapping.template_generation import generate_templates
    from fitonfhir_dagster.googlefit.catalog import sample_data_sources
    from fitonfhir_dagster.pipeline.runner import STEPS, iter_user_days
    from fitonfhir_dagster.pipeline.step_stores import StepStores
    from fitonfhir_dagster.settings import Settings
    from fitonfhir_dagster.stores.archive import LocalArchive
    from fitonfhir_dagster.stores.users import SqliteUsersTable
    from fitonfhir_dagster.stores.vault import LocalTokenVault
    from fitonfhir_sandbox.handle import SandboxHandle

    home = work / "home"
    settings = Settings.from_env(
        {
            "FITONFHIR_HOME": str(home),
            "FITONFHIR_SANDBOX_URL": url,
            "FITONFHIR_MAX_REQUESTS_PER_MINUTE": "0",
            "FITONFHIR_PROJECT_MAX_REQUESTS_PER_MINUTE": "0",
        }
    )
    stores = StepStores(
        settings,
        SqliteUsersTable(home / "users.sqlite3"),
        LocalTokenVault(home / "vault"),
        LocalArchive(home / "archive"),
    )
    sandbox = SandboxHandle(url=url, home=work, context=cast(Any, None))  # onboarding is plain HTTP
    email = f"bench-{days}d-{work.name.lower()}+heavy{points}@example.com"
    tokens = sandbox.onboard(email)
    fhir = FhirClient(url + "/fhir")
    patient = fhir.update({"resourceType": "Patient", "id": f"heavy-{work.name.lower()}", "active": True})
    user = stores.users.upsert_onboarded(
        google_sub=sandbox.sub_for_email(email), google_issuer=url, patient_id=patient["id"]
    )
    stores.vault.put(user.key, tokens["refresh_token"])
    templates = generate_templates(sample_data_sources(), style="standard")
    today = datetime.now(UTC).date()
    keys = [((today - timedelta(days=n)).isoformat(), user.key) for n in range(days, 0, -1)]

    before_rss, before_cpu = rss_mb(), cpu_seconds()
    started = time.perf_counter()
    fetched = written = api_calls = 0
    failed = []
    for outcome in iter_user_days(stores, keys, STEPS, fhir=fhir, templates=templates, workers=1):
        if not outcome.ok:
            failed.append(str(outcome.error))
            continue
        fetched += outcome.summaries["fit_datasets"].points
        api_calls += outcome.summaries["fit_datasets"].api_calls
        obs = outcome.summaries["fhir_observations"]
        written += obs.created + obs.updated
        if obs.points_unaccounted:
            failed.append(f"{outcome.day}: {obs.points_unaccounted} points unaccounted")
    seconds = time.perf_counter() - started
    if failed:
        raise SystemExit("the import failed: " + "; ".join(failed[:3]))
    return {
        "days": days,
        "points_per_day": points,
        "points": fetched,
        "observations_written": written,
        "seconds": round(seconds, 1),
        "points_per_s": round(fetched / seconds),
        "cpu_seconds": round(cpu_seconds() - before_cpu, 1),
        "points_per_cpu_s": round(fetched / max(cpu_seconds() - before_cpu, 1e-9)),
        # dataset pages, plus the data-source list and the token refresh of the window
        "google_calls_per_user_day": round((api_calls + 2) / days, 2),
        "rss_before_mb": round(before_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--points", type=int, default=50_000, help="heart-rate points a day of the heavy user"
    )
    parser.add_argument("--days", type=int, default=30, help="days of the long figure")
    parser.add_argument("--only", default=",".join(FIGURES), help=f"figures to run, of {','.join(FIGURES)}")
    parser.add_argument("--one", nargs=3, metavar=("URL", "DAYS", "POINTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one figure, one JSON line
        url, days, points = args.one[0], int(args.one[1]), int(args.one[2])
        with tempfile.TemporaryDirectory(prefix="fitonfhir-heavy-") as tmp:
            print(json.dumps(one_figure(url, days, points, Path(tmp))), flush=True)
        return

    from fitonfhir_sandbox.handle import running_sandbox_process

    work = Path(tempfile.mkdtemp(prefix="fitonfhir-heavy-bench-"))
    report: dict[str, Any] = {}
    with running_sandbox_process(work) as sandbox:
        url = sandbox.url
        for name in args.only.split(","):
            days, times = FIGURES[name]
            if name == "30x1":
                days = args.days
            points = args.points * times
            child = subprocess.run(
                [sys.executable, __file__, "--one", url, str(days), str(points)],
                capture_output=True,
                text=True,
            )
            if child.returncode != 0:
                raise SystemExit(f"figure {name} failed:\n{child.stderr[-3000:]}")
            figure = json.loads(child.stdout.strip().splitlines()[-1])
            report[f"{days}d_x_{points}"] = figure
            print(
                f"{days:>3} day(s) x {points} points/day: {figure['points']} points,"
                f" {figure['observations_written']} Observations written in {figure['seconds']} s"
                f" ({figure['points_per_s']} points/s); run process: {figure['cpu_seconds']} CPU s"
                f" ({figure['points_per_cpu_s']} points/CPU s), RSS {figure['rss_before_mb']} MB before,"
                f" peak {figure['peak_rss_mb']} MB; Google calls/user-day {figure['google_calls_per_user_day']}",
                flush=True,
            )
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
