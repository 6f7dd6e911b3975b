"""Benchmark: a backfill of N users x D days through a real Dagster instance, against the sandbox.

In one process: the sandbox (Google OAuth + Fit + FHIR, started like the tests start it, in a thread),
N onboarded sandbox users, a Dagster instance on disk (our instance YAML), and

1. the ``user_day_import`` job (the ``user_day_steps`` multi-asset, in-process executor) over the
   N x D keys of the last D complete UTC days, in one range run;
2. a no-op multi-asset with the same partitions over the same keys (the Dagster floor);
3. the same import again, nothing changed at Google (a re-run), and the no-op again.

Prints user-days/s, points/s, Google requests per user-day (counted at the sandbox: Fit API calls and
token refreshes), FHIR requests per user-day, this process's CPU seconds, the ratio to the no-op floor and
the peak RSS, then one JSON line. ``--sandbox process`` runs the sandbox in a process of its own, as Google
and a FHIR server are in production (its CPU is then not the import's). ``FITONFHIR_MAX_REQUESTS_PER_MINUTE`` keeps its default (per user) unless set.

Run: ``.venv/bin/python bench/backfill.py [--users 5] [--days 7] [--heavy 0] [--rotate] [--sandbox process]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def request_kinds(before: dict[str, int], after: dict[str, int]) -> Counter[str]:
    """The sandbox's tally between two readings (``METHOD /area`` -> n), by what the import paid for."""
    kinds: Counter[str] = Counter()
    for name, n in after.items():
        method, _, area = name.partition(" ")
        if area == "/fitness":
            kind = "fit"
        elif area == "/token":
            kind = "token"
        elif area == "/fhir":
            kind = "fhir_get" if method == "GET" else "fhir_post_put"  # batch reads are POSTs too
        else:
            kind = "other"
        kinds[kind] += n - before.get(name, 0)
    return kinds


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """CPU seconds of this process's running children (the sandbox process, if any), from /proc (Linux)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _metadata_sum(result: Any, asset: str, key: str) -> int:
    import dagster as dg

    return sum(
        int(e.materialization.metadata[key].value)
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(asset) and key in e.materialization.metadata
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument(
        "--heavy", type=int, default=0, help="how many of the users are heavy (~50k points/day)"
    )
    parser.add_argument("--rotate", action="store_true", help="the sandbox rotates refresh tokens")
    parser.add_argument("--no-rerun", action="store_true", help="skip the re-run")
    parser.add_argument(
        "--sandbox",
        choices=("thread", "process"),
        default="thread",
        help="run the sandbox in a thread of this process (as the tests and the demo do) or in a process of"
        " its own (as Google and a FHIR server are: its CPU is not this process's)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fitonfhir-bench-"))
    os.environ["FITONFHIR_HOME"] = str(work / "home")
    os.environ["DAGSTER_HOME"] = str(work / "dagster")
    os.environ.setdefault("FITONFHIR_RETRY_DELAY_SECONDS", "0")

    from fitonfhir_sandbox.handle import running_sandbox, running_sandbox_process

    if args.sandbox == "process":
        if args.rotate:
            raise SystemExit(
                "--rotate needs --sandbox thread (the setting is changed in the sandbox's process)"
            )
        started = running_sandbox_process(work / "sandbox")
    else:
        started = running_sandbox(work / "sandbox", rotate_refresh_tokens=args.rotate)
    with started as sandbox:
        os.environ["FITONFHIR_SANDBOX_URL"] = sandbox.url
        report = run(args, sandbox)
    report["sandbox"] = args.sandbox
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(f"peak RSS of the whole process: {report['peak_rss_mb']} MB")
    print(json.dumps(report, sort_keys=True))


def run(args: argparse.Namespace, sandbox: Any) -> dict[str, Any]:
    import dagster as dg

    from fitonfhir_dagster.definitions import defs
    from fitonfhir_dagster.defs.partitions import USERS, user_day_partitions
    from fitonfhir_dagster.defs.run_requests import range_run_request
    from fitonfhir_dagster.fhir.fhir_client import FhirClient
    from fitonfhir_dagster.settings import Settings
    from fitonfhir_dagster.stores.factory import open_users_table, open_vault
    from fitonfhir_sandbox.local_services import prepare_dagster_home

    settings = Settings.from_env()
    definitions = defs()
    prepare_dagster_home(settings)
    users, vault, fhir = open_users_table(settings), open_vault(settings), FhirClient.from_settings(settings)
    started = time.perf_counter()
    keys = []
    for i in range(args.users):
        email = f"bench-{i}{'+heavy' if i < args.heavy else ''}@example.com"
        tokens = sandbox.onboard(email)
        patient = fhir.update({"resourceType": "Patient", "id": f"bench-{i}", "active": True})
        user = users.upsert_onboarded(
            google_sub=sandbox.sub_for_email(email), google_issuer=sandbox.url, patient_id=patient["id"]
        )
        vault.put(user.key, tokens["refresh_token"])
        keys.append(user.key)
    print(
        f"onboarded {args.users} users ({args.heavy} heavy) in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    today = datetime.now(UTC).date()
    first_day, last_day = today - timedelta(days=args.days), today - timedelta(days=1)
    tags = range_run_request(first_day, last_day, keys[0], keys[-1], "bench").tags
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    user_days = args.users * args.days

    steps = ("fit_datasets", "device_messages", "fhir_observations")

    @dg.multi_asset(
        name="noop_user_day_steps",
        specs=[dg.AssetSpec(f"noop_{s}") for s in steps],
        partitions_def=user_day_partitions(settings.start_date),
        can_subset=True,
    )
    def noop_user_day_steps(context):  # type: ignore[no-untyped-def]  # no string annotation: Dagster inspects it
        for spec_key in context.selected_asset_keys:
            yield dg.MaterializeResult(asset_key=spec_key)

    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(USERS, keys)
        assert dg.materialize(
            [definitions.resolve_assets_def("medtech_templates")], instance=instance, run_config=quiet
        ).success
        job = definitions.resolve_job_def("user_day_import")

        def timed_import(label: str) -> dict[str, Any]:
            before, cpu0, sandbox_cpu0 = sandbox.request_counts(), cpu_seconds(), children_cpu_seconds()
            t0 = time.perf_counter()
            result = job.execute_in_process(
                instance=instance, tags=tags, raise_on_error=False, run_config=quiet
            )
            seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
            sandbox_cpu = children_cpu_seconds() - sandbox_cpu0
            if not result.success:
                raise SystemExit(f"{label}: the run failed (run id {result.run_id})")
            counts = request_kinds(before, sandbox.request_counts())
            points = _metadata_sum(result, "fit_datasets", "points")
            written = _metadata_sum(result, "fhir_observations", "created") + _metadata_sum(
                result, "fhir_observations", "updated"
            )
            return {
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu, 2),
                "sandbox_process_cpu_seconds": round(sandbox_cpu, 2),
                "user_days_per_s": round(user_days / seconds, 2),
                "points": points,
                "points_per_s": round(points / seconds),
                "observations_written": written,
                "google_fit_calls_per_user_day": round(counts["fit"] / user_days, 3),
                "google_token_calls_per_user_day": round(counts["token"] / user_days, 3),
                "google_calls_per_user_day": round((counts["fit"] + counts["token"]) / user_days, 3),
                "fhir_get_per_user_day": round(counts["fhir_get"] / user_days, 3),
                "fhir_post_put_per_user_day": round(counts["fhir_post_put"] / user_days, 3),
                "fhir_requests_per_user_day": round(
                    (counts["fhir_get"] + counts["fhir_post_put"]) / user_days, 3
                ),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }

        def timed_noop() -> tuple[float, float]:
            t0, cpu0 = time.perf_counter(), cpu_seconds()
            result = dg.materialize([noop_user_day_steps], instance=instance, tags=tags, run_config=quiet)
            assert result.success
            return time.perf_counter() - t0, cpu_seconds() - cpu0

        def report(name: str, phase: dict[str, Any]) -> None:
            noop_seconds, noop_cpu = timed_noop()
            phase["noop_seconds"], phase["noop_cpu_seconds"] = round(noop_seconds, 2), round(noop_cpu, 2)
            phase["ratio_to_noop"] = round(phase["seconds"] / phase["noop_seconds"], 2)
            print(
                f"{name:>7}: {args.users} users x {args.days} days = {user_days} user-days in {phase['seconds']} s"
                f" ({phase['user_days_per_s']} user-days/s, {phase['points']} points, {phase['points_per_s']} points/s,"
                f" {phase['observations_written']} Observations written; CPU {phase['cpu_seconds']} s,"
                f" sandbox process CPU {phase['sandbox_process_cpu_seconds']} s);"
                f" no-op floor {phase['noop_seconds']} s (CPU {phase['noop_cpu_seconds']} s),"
                f" ratio {phase['ratio_to_noop']}x; Google calls/user-day {phase['google_calls_per_user_day']}"
                f" (fit {phase['google_fit_calls_per_user_day']}, token {phase['google_token_calls_per_user_day']});"
                f" FHIR requests/user-day {phase['fhir_requests_per_user_day']}"
                f" (GET {phase['fhir_get_per_user_day']}, POST/PUT {phase['fhir_post_put_per_user_day']});"
                f" peak RSS so far {phase['peak_rss_mb']} MB",
                flush=True,  # a large run prints each phase as it ends
            )

        phases: dict[str, Any] = {"import": timed_import("import")}
        report("import", phases["import"])
        if not args.no_rerun:
            phases["rerun"] = timed_import("re-run")
            report("rerun", phases["rerun"])
    return {
        "users": args.users,
        "days": args.days,
        "heavy": args.heavy,
        "first_day": first_day.isoformat(),
        "last_day": last_day.isoformat(),
        "max_requests_per_minute": settings.max_requests_per_minute,
        **{f"{name}_{k}": v for name, phase in phases.items() for k, v in phase.items()},
    }


if __name__ == "__main__":
    main()
