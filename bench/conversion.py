"""Benchmark: MedTech-compatible conversion of one heavy user-day (~50k points) with the original templates.

Messages: heart rate (30k points), steps (15k) and blood pressure with enums (5k), 1000 points a page,
in the original's device-message format. Times ``Converter.convert`` (plain dicts, precompiled
expressions) and, in the same run, a baseline that builds and validates the same Observations with
``fhir.resources.R4B``. Prints points/s, Observations/s and the speed-up.

Run: ``.venv/bin/python bench/conversion.py``
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from fhir.resources.R4B.observation import Observation

from fitonfhir_dagster.medtech.converter import Converter
from fitonfhir_dagster.medtech.identity import CreateIdentity

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "original-fit-on-fhir"
SUB = "110248495921238986420"
DAY_START_NS = 1_764_288_000_000_000_000
PAGE = 1000
STREAMS = {
    "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm": 30_000,
    "derived:com.google.step_count.delta:com.google.android.gms:merge_step_deltas": 15_000,
    "raw:com.google.blood_pressure:com.google.android.apps.fitness:user_input": 5_000,
}


def values_for(data_type: str, i: int) -> list[dict[str, Any]]:
    def entry(fp: float | None = None, integer: int | None = None) -> dict[str, Any]:
        return {"fpVal": fp, "intVal": integer, "mapVal": [], "stringVal": None, "ETag": None}

    if data_type == "com.google.heart_rate.bpm":
        return [entry(fp=55.0 + i % 60)]
    if data_type == "com.google.step_count.delta":
        return [entry(integer=i % 120)]
    return [entry(fp=110.0 + i % 30), entry(fp=70.0 + i % 20), entry(integer=i % 5), entry(integer=i % 5)]


def heavy_day() -> list[dict[str, Any]]:
    messages = []
    for stream, count in STREAMS.items():
        data_type = stream.split(":")[1]
        package = stream.split(":")[2]
        step = 86_400_000_000_000 // count
        points = [
            {
                "computationTimeMillis": None,
                "dataTypeName": data_type,
                "endTimeNanos": DAY_START_NS + i * step + 123_456,
                "modifiedTimeMillis": 1_764_300_000_000,
                "originDataSourceId": None,
                "rawTimestampNanos": None,
                "startTimeNanos": DAY_START_NS + i * step,
                "value": values_for(data_type, i),
                "ETag": None,
            }
            for i in range(count)
        ]
        for start in range(0, count, PAGE):
            page = points[start : start + PAGE]
            messages.append(
                {
                    "dataSourceId": stream,
                    "maxEndTimeNs": page[-1]["endTimeNanos"],
                    "minStartTimeNs": page[0]["startTimeNanos"],
                    "nextPageToken": None,
                    "point": page,
                    "ETag": None,
                    "patientIdentifier": SUB,
                    "deviceIdentifier": f"{SUB}.{package}",
                }
            )
    return messages


def best_of(runs: int, action: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    messages = heavy_day()
    points = sum(len(m["point"]) for m in messages)
    converter = Converter(
        (FIXTURES / "devicecontent.json").read_text(),
        (FIXTURES / "fhirmapping.json").read_text(),
        CreateIdentity(),
    )
    seconds, result = best_of(3, lambda: converter.convert(messages))
    assert not result.dead_letters, result.dead_letters[:3]
    observations = len(result.observations)
    print(f"messages: {len(messages)}, points: {points}, Observations: {observations}")
    print(
        f"conversion: {seconds:.3f} s, {points / seconds:,.0f} points/s, {observations / seconds:,.0f} Observations/s"
    )

    sample = result.observations
    baseline_seconds, _ = best_of(1, lambda: [Observation.model_validate(o) for o in sample])
    per_obs_ours = seconds / observations
    per_obs_baseline = baseline_seconds / len(sample)
    print(
        f"baseline (fhir.resources.R4B build+validate only): {baseline_seconds:.3f} s,"
        f" {len(sample) / baseline_seconds:,.0f} Observations/s"
    )
    print(f"speed-up, whole conversion vs R4B build+validate alone: {per_obs_baseline / per_obs_ours:.1f}x")
    runs = [best_of(1, lambda: converter.convert(messages))[0] for _ in range(3)]
    print(f"conversion runs (s): {', '.join(f'{r:.3f}' for r in runs)}; median {statistics.median(runs):.3f}")


if __name__ == "__main__":
    main()
