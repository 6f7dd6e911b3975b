"""Deterministic synthetic Google Fit data, in Google's wire format.

Every user (Google ``sub``) gets the original project's sample data sources (with per-user device
uids) and, per data type and UTC day, a "truth" list of measurements seeded by ``(sub, type, day)``.
Each measurement has one origin source; a merged stream returns the union of its type's origins,
an origin stream only its own points. The same request therefore always yields the same bytes.
Points become visible once their ``modifiedTimeMillis`` has passed, so late uploads exist.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache, lru_cache
from typing import Any

from fitonfhir_dagster.googlefit import catalog
from fitonfhir_sandbox import accounts

NS_PER_MS = 1_000_000
MS_PER_MIN = 60_000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
_EPOCH = date(1970, 1, 1)
DATA_START = date(2019, 1, 1)  # no sandbox account has data before this day
PLACEHOLDER_UID = "12345678"
ORPHAN_STREAM_ID = "raw:com.google.heart_rate.bpm:407408718192:sandbox_orphan"
MERGED_HR_STREAM_ID = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
HEAVY_POINTS_PER_DAY = accounts.HEAVY_POINTS_PER_DAY
# ``heavy`` below: False (a normal account), True (HEAVY_POINTS_PER_DAY heart-rate points a day) or
# another number of points a day; see ``_heaviness`` (it keeps False/True, so their data never changes).
Heaviness = bool | int

HR = "com.google.heart_rate.bpm"
STEPS = "com.google.step_count.delta"
HEART_MINUTES = "com.google.heart_minutes"
_CONTINUOUS = (HR, STEPS, HEART_MINUTES)

Values = tuple[tuple[str, float | int], ...]
# (start_ms, end_ms, seq, values, origin index, modified_ms)
Truth = tuple[int, int, int, Values, int, int]


class UnknownStream(LookupError):
    """The user has no data source with this id."""


class BadPageToken(ValueError):
    """A pageToken that this dataset did not issue."""


@dataclass(frozen=True)
class Traits:
    """Per-user constants derived from the sub: devices, daily rhythm and body measures."""

    has_watch: bool
    wake_ms: int
    sleep_ms: int
    base_hr: int
    weight_kg: float
    height_m: float
    body_fat: float
    systolic: int
    diastolic: int
    phase3: int
    phase7: int


@cache
def traits(sub: str) -> Traits:
    h = hashlib.sha256(("traits|" + sub).encode("utf-8")).digest()
    return Traits(
        has_watch=h[0] % 4 != 0,
        wake_ms=(5 * 60 + h[1] % 180) * MS_PER_MIN,
        sleep_ms=(21 * 60 + h[2] % 150) * MS_PER_MIN,
        base_hr=56 + h[3] % 16,
        weight_kg=55 + (h[4] % 220) / 5,
        height_m=1.55 + (h[5] % 40) / 100,
        body_fat=12 + (h[6] % 200) / 10,
        systolic=110 + h[7] % 25,
        diastolic=68 + h[8] % 15,
        phase3=h[9] % 3,
        phase7=h[10] % 7,
    )


def device_uid(sub: str, device_type: str) -> str:
    """A stable 8-hex-digit device uid per user and device (Google's placeholder was 12345678)."""
    return hashlib.sha256(f"device|{sub}|{device_type}".encode()).hexdigest()[:8]


def _orphan_source() -> dict[str, Any]:
    hr_type = next(s["dataType"] for s in catalog.sample_data_sources() if s["dataType"]["name"] == HR)
    return {
        "dataStreamId": ORPHAN_STREAM_ID,
        "dataStreamName": "sandbox_orphan",
        "type": "raw",
        "dataType": copy.deepcopy(hr_type),
        "application": {"name": "sandbox-rest-writer"},
        "dataQualityStandard": [],
    }


@lru_cache(maxsize=4096)
def _sources(sub: str, orphan: bool) -> tuple[dict[str, Any], ...]:
    found: list[dict[str, Any]] = []
    t = traits(sub)
    for sample in catalog.sample_data_sources():
        source = copy.deepcopy(sample)
        device = source.get("device")
        if device:
            if device.get("type") == "watch" and not t.has_watch:
                continue
            uid = device_uid(sub, device.get("type", ""))
            device["uid"] = uid
            source["dataStreamId"] = source["dataStreamId"].replace(f":{PLACEHOLDER_UID}:", f":{uid}:")
        found.append(source)
    if orphan:
        found.append(_orphan_source())
    return tuple(found)


def user_sources(sub: str, *, orphan: bool = False) -> list[dict[str, Any]]:
    """The user's data sources in Google's ``dataSource`` shape (fresh copies, safe to mutate)."""
    return copy.deepcopy(list(_sources(sub, orphan)))


def _role(stream_id: str) -> str:
    if stream_id == ORPHAN_STREAM_ID:
        return "orphan"
    if catalog.is_merged_stream(stream_id):
        return "merged"
    if stream_id.endswith(":estimated_steps"):
        return "estimated"
    if "resting_heart_rate" in stream_id:
        return "resting"
    return "origin"


def _origin_priority(type_name: str, stream_id: str) -> tuple[int, int]:
    raw_first = 0 if stream_id.startswith("raw:") else 1
    if type_name in _CONTINUOUS:
        device = 0 if ":watch:" in stream_id else 1 if ":iphone:" in stream_id else 2
        return device, raw_first
    return (0 if stream_id.endswith(":user_input") else 1), raw_first


@lru_cache(maxsize=4096)
def origins(sub: str, type_name: str) -> tuple[str, ...]:
    """The user's origin streams of one type, the primary (most data) first."""
    ids = [s["dataStreamId"] for s in _sources(sub, False) if s["dataType"]["name"] == type_name]
    ids = [i for i in ids if _role(i) == "origin"]
    return tuple(sorted(ids, key=lambda i: (_origin_priority(type_name, i), i)))


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


# --- per-type generators: (rng, traits, day number, heavy) -> [(start_ms_in_day, end_ms_in_day, values)]

Raw = list[tuple[int, int, Values]]


def _awake_times(rng: random.Random, t: Traits, n: int) -> list[int]:
    return sorted(rng.randrange(t.wake_ms, t.sleep_ms) for _ in range(n))


def _heaviness(heavy: Heaviness) -> Heaviness:
    """The canonical form (cache key and seed): False, True for HEAVY_POINTS_PER_DAY, or the count."""
    if heavy is True or heavy is False:
        return heavy
    count = int(heavy)
    return count == HEAVY_POINTS_PER_DAY or (count if count > 0 else False)


def _heavy_count(heavy: Heaviness) -> int:
    return HEAVY_POINTS_PER_DAY if heavy is True else int(heavy)


def _heart_rate(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    out: Raw = []
    if heavy:
        count = _heavy_count(heavy)
        step = min(1000, (MS_PER_DAY - 1 - t.wake_ms) // count)  # one a second; denser past ~57k a day
        for i in range(count):
            bpm = t.base_hr + 12 * math.sin(i / 900) + rng.gauss(0, 3)
            out.append((t.wake_ms + i * step, t.wake_ms + i * step, (("fpVal", float(round(bpm))),)))
        return out
    workout = rng.randrange(t.wake_ms, t.sleep_ms - MS_PER_HOUR)
    workout_end = workout + rng.randrange(20, 60) * MS_PER_MIN
    ms = t.wake_ms + rng.randrange(0, 120_000)
    while ms < t.sleep_ms:
        bpm = t.base_hr + 6 + rng.gauss(0, 4) + (40 if workout <= ms < workout_end else 0)
        bpm = min(185.0, max(42.0, float(round(bpm))))
        out.append((ms, ms, (("fpVal", bpm),)))
        ms += rng.randrange(180_000, 300_001)
    return out


def _steps(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    out: Raw = []
    ms = t.wake_ms
    while True:
        ms += rng.randrange(10, 90) * MS_PER_MIN
        bout_end = ms + rng.randrange(5, 41) * MS_PER_MIN
        if bout_end >= t.sleep_ms:
            return out
        cadence = rng.uniform(70, 125)
        while ms < bout_end:
            dur = min(rng.randrange(60_000, 300_001), bout_end - ms)
            steps = max(1, int(cadence * dur / MS_PER_MIN * rng.uniform(0.85, 1.1)))
            out.append((ms, ms + dur, (("intVal", steps),)))
            ms += dur


def _heart_minutes(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    out: Raw = []
    sessions = rng.randint(1, 3)
    slot = (t.sleep_ms - t.wake_ms) // sessions
    for k in range(sessions):
        start = t.wake_ms + k * slot + rng.randrange(0, slot - 35 * MS_PER_MIN)
        points = 2.0 if rng.random() < 0.3 else 1.0
        for m in range(rng.randint(10, 30)):
            begin = start + m * MS_PER_MIN
            out.append((begin, begin + MS_PER_MIN, (("fpVal", points),)))
    return out


def _count(rng: random.Random, low: int, high: int, guaranteed: bool) -> int:
    n = rng.randint(low, high)
    return max(n, 1) if guaranteed else n


def _with_optional(rng: random.Random, required: Values, optional: Values) -> Values:
    """Optional trailing fields are sometimes absent: Google then sends a shorter value[]."""
    return required + optional[: rng.randint(0, len(optional))]


def _oxygen(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    out: Raw = []
    for ms in _awake_times(rng, t, rng.randint(2, 5)):
        flow = round(rng.uniform(1, 3), 1) if rng.random() < 0.1 else 0.0
        required: Values = (("fpVal", round(rng.uniform(94.5, 99.5), 1)), ("fpVal", flow))
        optional: Values = (("intVal", 1 if flow else 0), ("intVal", 1), ("intVal", 1))
        out.append((ms, ms, _with_optional(rng, required, optional)))
    return out


def _blood_pressure(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    out: Raw = []
    for ms in _awake_times(rng, t, _count(rng, 0, 2, (day + 1) % 3 == t.phase3)):
        systolic = round(t.systolic + rng.gauss(0, 7))
        diastolic = min(round(t.diastolic + rng.gauss(0, 5)), systolic - 25)
        required: Values = (("fpVal", float(systolic)), ("fpVal", float(diastolic)))
        optional: Values = (("intVal", rng.randint(1, 4)), ("intVal", rng.randint(1, 4)))
        out.append((ms, ms, _with_optional(rng, required, optional)))
    return out


def _glucose(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    out: Raw = []
    for ms in _awake_times(rng, t, _count(rng, 0, 3, (day + 2) % 3 == t.phase3)):
        optional: Values = (
            ("intVal", rng.randint(1, 4)),
            ("intVal", rng.randint(1, 5)),
            ("intVal", rng.randint(1, 4)),
            ("intVal", rng.choice((1, 2, 2, 2, 6))),
        )
        out.append((ms, ms, _with_optional(rng, (("fpVal", round(rng.uniform(4.2, 8.8), 1)),), optional)))
    return out


def _temperature(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    out: Raw = []
    for ms in _awake_times(rng, t, _count(rng, 0, 2, day % 2 == t.phase3 % 2)):
        value: Values = (("fpVal", round(rng.uniform(36.1, 37.4), 1)),)
        out.append((ms, ms, _with_optional(rng, value, (("intVal", rng.randint(1, 10)),))))
    return out


def _morning(rng: random.Random, t: Traits) -> int:
    return t.wake_ms + rng.randrange(5, 30) * MS_PER_MIN


def _weight(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    if day % 3 != t.phase3 and rng.random() >= 0.2:
        return []
    ms = _morning(rng, t)
    kg = round(t.weight_kg + 0.8 * math.sin(day / 9) + rng.gauss(0, 0.3), 1)
    return [(ms, ms, (("fpVal", kg),))]


def _body_fat(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    if day % 3 != t.phase3 and rng.random() >= 0.1:
        return []
    ms = _morning(rng, t) + MS_PER_MIN
    return [(ms, ms, (("fpVal", round(t.body_fat + rng.gauss(0, 0.4), 1)),))]


def _height(rng: random.Random, t: Traits, day: int, heavy: Heaviness) -> Raw:
    if day % 7 != t.phase7:
        return []
    ms = _morning(rng, t) + 2 * MS_PER_MIN
    return [(ms, ms, (("fpVal", round(t.height_m, 2)),))]


_GENERATORS: dict[str, Callable[[random.Random, Traits, int, Heaviness], Raw]] = {
    "com.google.blood_glucose": _glucose,
    "com.google.blood_pressure": _blood_pressure,
    "com.google.body.fat.percentage": _body_fat,
    "com.google.body.temperature": _temperature,
    HEART_MINUTES: _heart_minutes,
    HR: _heart_rate,
    "com.google.height": _height,
    "com.google.oxygen_saturation": _oxygen,
    STEPS: _steps,
    "com.google.weight": _weight,
}
assert set(_GENERATORS) == set(catalog.DATA_TYPE_NAMES)


def truth(sub: str, type_name: str, day: int, heavy: Heaviness = False) -> tuple[Truth, ...]:
    """Every measurement of one type on one UTC day (day = days since 1970-01-01), sorted."""
    heavy = _heaviness(heavy)
    return (_heavy_truth if heavy else _light_truth)(sub, type_name, day, heavy)


def _make_truth(sub: str, type_name: str, day: int, heavy: Heaviness) -> tuple[Truth, ...]:
    t = traits(sub)
    rng = random.Random(_seed(sub, type_name, day, heavy))
    raw = _GENERATORS[type_name](rng, t, day, heavy)
    n_origins = len(origins(sub, type_name))
    meta = random.Random(_seed("meta", sub, type_name, day, heavy))
    base = day * MS_PER_DAY
    out: list[Truth] = []
    for seq, (start, end, values) in enumerate(sorted(raw, key=lambda r: (r[0], r[1]))):
        origin = 0 if n_origins == 1 or meta.random() < 0.85 else 1 + meta.randrange(n_origins - 1)
        if meta.random() < 0.05:  # uploaded hours later: "late data"
            delay = meta.randrange(2 * MS_PER_HOUR, 10 * MS_PER_HOUR)
        else:
            delay = meta.randrange(5_000, 30 * MS_PER_MIN)
        out.append((base + start, base + end, seq, values, origin, base + end + delay))
    return tuple(out)


# Heavy days are ~12 MB each, so they get a small cache of their own.
_light_truth = lru_cache(maxsize=1024)(_make_truth)
_heavy_truth = lru_cache(maxsize=2)(_make_truth)


# A stream's points for a day: (start_ms, end_ms, seq, values, originDataSourceId or None, modified_ms)
StreamPoint = tuple[int, int, int, Values, str | None, int]


def _stream_day(
    sub: str, stream_id: str, type_name: str, day: int, heavy: Heaviness
) -> tuple[StreamPoint, ...]:
    """The points one stream holds for one UTC day, sorted by (start, end, seq)."""
    heavy = _heaviness(heavy)
    return (_heavy_stream_day if heavy else _light_stream_day)(sub, stream_id, type_name, day, heavy)


def _make_stream_day(
    sub: str, stream_id: str, type_name: str, day: int, heavy: Heaviness
) -> tuple[StreamPoint, ...]:
    role = _role(stream_id)
    if role == "orphan":
        rng = random.Random(_seed("orphan", sub, day))
        t = traits(sub)
        base = day * MS_PER_DAY
        return tuple(
            (base + ms, base + ms, seq, (("fpVal", float(t.base_hr + rng.randint(0, 20))),), None, base + ms)
            for seq, ms in enumerate(_awake_times(rng, t, 3))
        )
    if role == "resting":
        rng = random.Random(_seed("resting", sub, day))
        t = traits(sub)
        ms = day * MS_PER_DAY + t.wake_ms
        bpm = float(t.base_hr - 4 + rng.randint(-2, 2))
        return ((ms, ms, 0, (("fpVal", bpm),), MERGED_HR_STREAM_ID, ms + 15 * MS_PER_MIN),)
    ids = origins(sub, type_name)
    points = truth(sub, type_name, day, heavy)
    if role in ("merged", "estimated"):
        return tuple((s, e, q, v, ids[o], m) for s, e, q, v, o, m in points)
    mine = ids.index(stream_id)
    origin = None if stream_id.startswith("raw:") else stream_id
    return tuple((s, e, q, v, origin, m) for s, e, q, v, o, m in points if o == mine)


def _make_stream_day_keys(
    sub: str, stream_id: str, type_name: str, day: int, heavy: Heaviness
) -> list[tuple[int, int, int]]:
    return [(p[0], p[1], p[2]) for p in _stream_day(sub, stream_id, type_name, day, heavy)]


_light_stream_day = lru_cache(maxsize=1024)(_make_stream_day)
_heavy_stream_day = lru_cache(maxsize=4)(_make_stream_day)
_light_keys = lru_cache(maxsize=1024)(_make_stream_day_keys)
_heavy_keys = lru_cache(maxsize=4)(_make_stream_day_keys)


def _stream_day_keys(
    sub: str, stream_id: str, type_name: str, day: int, heavy: Heaviness
) -> list[tuple[int, int, int]]:
    heavy = _heaviness(heavy)
    return (_heavy_keys if heavy else _light_keys)(sub, stream_id, type_name, day, heavy)


def clear_caches() -> None:
    """Forget generated days (tests use it to prove regeneration gives the same data)."""
    for cached in (
        _light_truth,
        _heavy_truth,
        _light_stream_day,
        _heavy_stream_day,
        _light_keys,
        _heavy_keys,
    ):
        cached.cache_clear()


def _point_json(p: StreamPoint, type_name: str) -> dict[str, Any]:
    start, end, _seq, values, origin, modified = p
    point: dict[str, Any] = {
        "startTimeNanos": str(start * NS_PER_MS),
        "endTimeNanos": str(end * NS_PER_MS),
        "dataTypeName": type_name,
    }
    if origin:
        point["originDataSourceId"] = origin
    point["value"] = [{key: val, "mapVal": []} for key, val in values]
    point["modifiedTimeMillis"] = str(modified)
    return point


def _fingerprint(stream_id: str, start_ns: int, end_ns: int) -> str:
    return hashlib.sha256(f"{stream_id}|{start_ns}|{end_ns}".encode()).hexdigest()[:12]


def encode_page_token(cursor: tuple[int, int, int], fingerprint: str) -> str:
    raw = json.dumps([*cursor, fingerprint], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str) -> tuple[int, int, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        start, end, seq, fp = json.loads(raw)
        cursor = (int(start), int(end), int(seq))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadPageToken(f"Invalid pageToken: {token[:40]!r}") from exc
    if fp != fingerprint:
        raise BadPageToken("pageToken was issued for a different dataset")
    return cursor


def _day_of(ms: int) -> int:
    return ms // MS_PER_DAY


def find_source(sub: str, stream_id: str, *, orphan: bool = False) -> dict[str, Any]:
    for source in _sources(sub, orphan):
        if source["dataStreamId"] == stream_id:
            return source
    raise UnknownStream(stream_id)


def dataset(
    sub: str,
    stream_id: str,
    start_ns: int,
    end_ns: int,
    *,
    now_ms: int,
    limit: int | None = None,
    page_token: str | None = None,
    heavy: Heaviness = False,
    orphan: bool = False,
) -> dict[str, Any]:
    """Google's dataset resource for ``{start_ns}-{end_ns}`` (int64 fields as strings).

    Points overlap the range (start <= range end and end >= range start); with ``limit`` the page
    holds the newest ``limit`` points and ``nextPageToken`` walks towards older ones.
    """
    source = find_source(sub, stream_id, orphan=orphan)
    type_name = source["dataType"]["name"]
    fingerprint = _fingerprint(stream_id, start_ns, end_ns)
    cursor = decode_page_token(page_token, fingerprint) if page_token else None
    wanted = None if limit is None else limit + 1
    first_day = max(_day_of(start_ns // NS_PER_MS), (DATA_START - _EPOCH).days)
    last_day = min(_day_of(end_ns // NS_PER_MS), _day_of(now_ms))
    newest_first: list[StreamPoint] = []
    if cursor is not None:  # days that start after the cursor hold no point of this page: not generated
        last_day = min(last_day, _day_of(cursor[0]))
    for day in range(last_day, first_day - 1, -1):
        points = _stream_day(sub, stream_id, type_name, day, heavy)
        keys = _stream_day_keys(sub, stream_id, type_name, day, heavy)
        high = bisect.bisect_left(keys, cursor) if cursor is not None else len(points)
        for i in range(high - 1, -1, -1):
            p = points[i]
            if (
                p[0] * NS_PER_MS <= end_ns
                and p[1] * NS_PER_MS >= start_ns
                and p[5] <= now_ms
                and p[1] <= now_ms
            ):
                newest_first.append(p)
                if wanted is not None and len(newest_first) >= wanted:
                    break
        if wanted is not None and len(newest_first) >= wanted:
            break
    has_more = limit is not None and len(newest_first) > limit
    page = newest_first[:limit] if limit is not None else newest_first
    page.reverse()
    body: dict[str, Any] = {
        "minStartTimeNs": str(start_ns),
        "maxEndTimeNs": str(end_ns),
        "dataSourceId": stream_id,
        "point": [_point_json(p, type_name) for p in page],
    }
    if has_more:
        body["nextPageToken"] = encode_page_token((page[0][0], page[0][1], page[0][2]), fingerprint)
    return body


def day_range_ns(day: date) -> tuple[int, int]:
    """The dataset range covering one UTC day: ``[00:00, next 00:00 - 1 ns]``."""
    start = (day - _EPOCH).days * MS_PER_DAY * NS_PER_MS
    return start, start + MS_PER_DAY * NS_PER_MS - 1


def heavy_day_pages(
    sub: str = "100000000000000000001", day: date = date(2025, 1, 15), limit: int = 1000
) -> list[dict[str, Any]]:
    """The ~50k-point merged heart-rate user-day of a heavy account, as the API pages it (newest first).

    For benchmarks that skip HTTP; over HTTP, any ``name+heavy@...`` sandbox account gets the same data.
    """
    start, end = day_range_ns(day)
    now_ms = (day - _EPOCH).days * MS_PER_DAY + 2 * MS_PER_DAY
    pages: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = dataset(
            sub, MERGED_HR_STREAM_ID, start, end, now_ms=now_ms, limit=limit, page_token=token, heavy=True
        )
        pages.append(page)
        token = page.get("nextPageToken")
        if not token:
            return pages
