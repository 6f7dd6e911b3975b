"""Benchmark: device-message building for one heavy user-day (~50k points).

Compares ``build_device_messages`` with a naive baseline in the same process: per-point dict copies,
stdlib ``json`` with indentation and a size check by re-serialising, the way a straightforward port of
the original would do it. Prints points/s for both and the speed-up.
"""

from __future__ import annotations

import copy
import json
import statistics
import time

from fitonfhir_dagster.fitmapping.device_messages import build_device_messages

SUB = "110248495921238986420"
DAY_START_NS = 1_764_288_000_000_000_000
STREAMS = {
    "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm": ("fpVal", 30_000),
    "derived:com.google.step_count.delta:com.google.android.gms:merge_step_deltas": ("intVal", 15_000),
    "derived:com.google.heart_minutes:com.google.android.gms:merge_heart_minutes": ("fpVal", 5_000),
}
PAGE = 1000


def heavy_day() -> list[tuple[dict, list[dict]]]:
    sources = []
    for stream, (kind, n) in STREAMS.items():
        step = 86_400_000_000_000 // n
        points = [
            {
                "dataTypeName": stream.split(":")[1],
                "startTimeNanos": DAY_START_NS + i * step,
                "endTimeNanos": DAY_START_NS + i * step + step // 2,
                "modifiedTimeMillis": 1_764_300_000_000 + i,
                "originDataSourceId": "raw:" + stream.split(":")[1] + ":com.example:watch",
                "value": [{kind: (60.5 + i % 50) if kind == "fpVal" else i % 120, "mapVal": []}],
            }
            for i in range(n)
        ]
        pages = [
            {
                "dataSourceId": stream,
                "minStartTimeNs": DAY_START_NS,
                "maxEndTimeNs": DAY_START_NS + 86_400_000_000_000 - 1,
                "point": points[i : i + PAGE],
            }
            for i in range(0, n, PAGE)
        ]
        source = {"dataStreamId": stream, "application": {"packageName": "com.google.android.gms"}}
        sources.append((source, pages))
    return sources


def naive(sources: list[tuple[dict, list[dict]]]) -> int:
    points = 0
    for source, pages in sources:
        device = ".".join([SUB, source["application"]["packageName"]])
        for page in pages:
            message = copy.deepcopy(page)
            for point in message["point"]:
                for key in ("computationTimeMillis", "rawTimestampNanos", "ETag"):
                    point.setdefault(key, None)
                for value in point["value"]:
                    for key in ("fpVal", "intVal", "stringVal", "ETag"):
                        value.setdefault(key, None)
            message["patientIdentifier"] = SUB
            message["deviceIdentifier"] = device
            body = json.dumps(message, indent=2).encode()
            assert len(body) < 1_000_000
            points += len(message["point"])
    return points


def ours(sources: list[tuple[dict, list[dict]]]) -> int:
    return sum(m.points for source, pages in sources for m in build_device_messages(SUB, source, pages))


def measure(fn, sources, repeat: int = 5) -> tuple[int, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        points = fn(sources)
        times.append(time.perf_counter() - t0)
    return points, statistics.median(times)


def main() -> None:
    sources = heavy_day()
    total = sum(len(p["point"]) for _, pages in sources for p in pages)
    n_ours, t_ours = measure(ours, sources)
    n_naive, t_naive = measure(naive, sources)
    assert n_ours == n_naive == total
    print(f"user-day points: {total}")
    print(f"device messages (ours):   {total / t_ours:>12,.0f} points/s  ({t_ours * 1000:.1f} ms)")
    print(f"naive baseline:           {total / t_naive:>12,.0f} points/s  ({t_naive * 1000:.1f} ms)")
    print(f"speed-up: {t_naive / t_ours:.1f}x")


if __name__ == "__main__":
    main()
