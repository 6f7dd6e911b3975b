"""UTC instants as .NET ticks (100 ns) since the Unix epoch, parsed and written the way MedTech does.

MedTech keeps time in .NET ``DateTime`` ticks and writes 7 fractional digits (``...20.1240000Z``);
Python datetimes stop at microseconds, so instants are plain integers here.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime
from functools import lru_cache

TICKS_PER_SECOND = 10_000_000
TICKS_PER_MS = 10_000
TICKS_PER_HOUR = 3600 * TICKS_PER_SECOND
TICKS_PER_DAY = 24 * TICKS_PER_HOUR
# .NET DateTime range: 0001-01-01T00:00:00 .. 9999-12-31T23:59:59.9999999, as Unix-epoch ticks.
MIN_TICKS = -62135596800 * TICKS_PER_SECOND
MAX_TICKS = 253402300800 * TICKS_PER_SECOND - 1

_ISO = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?\s*$"
)


class TimestampError(ValueError):
    """A value is not a date-time MedTech could read."""


def parse_timestamp(text: str) -> int:
    """ISO-8601 text to ticks; ``Z`` or an offset give the same instant, no zone means UTC (as MedTech)."""
    match = _ISO.match(text)
    if not match:
        raise TimestampError(f"{text!r} is not a date-time")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError as exc:
        raise TimestampError(f"{text!r} is not a date-time: {exc}") from None
    seconds = calendar.timegm(moment.timetuple())
    frac_ticks = (
        int((fraction or "0").ljust(7, "0")) if len(fraction or "") <= 7 else _dotnet_fraction(fraction)
    )
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + (int(digits[2:4]) * 60 if len(digits) > 2 else 0)
        seconds -= sign * offset
    return seconds * TICKS_PER_SECOND + frac_ticks


def _dotnet_fraction(digits: str) -> int:
    """Ticks of a fraction with more than 7 digits, as .NET's ``DateTime.Parse`` computes them.

    Json.NET's ISO reader takes at most 7 digits, so such text reaches ``DateTime.Parse``: its
    ``ParseFraction`` sums ``digit * 0.1**k`` in a double and ``Math.Round(fraction * TicksPerSecond)``
    rounds half to even (Python's ``round`` on a float does the same). May give 10_000_000, the next second.
    """
    fraction = 0.0
    base = 0.1
    for ch in digits:
        fraction += (ord(ch) - 48) * base
        base *= 0.1
    return round(fraction * TICKS_PER_SECOND)


def check_range(ticks: int) -> int:
    if not MIN_TICKS <= ticks <= MAX_TICKS:
        raise TimestampError(f"instant {ticks} ticks is outside the .NET DateTime range")
    return ticks


def _calendar(ticks: int) -> tuple[time.struct_time, int]:
    seconds, frac = divmod(ticks, TICKS_PER_SECOND)
    return time.gmtime(seconds), frac


@lru_cache(maxsize=1024)
def _day_text(day: int) -> tuple[str, str]:
    t = time.gmtime(day * 86400)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}", f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}"


def format_period_instant(ticks: int) -> str:
    """``2023-11-14T22:13:20.1240000Z``: how MedTech writes ``effectivePeriod`` start and end."""
    seconds, frac = divmod(ticks, TICKS_PER_SECOND)
    day, rest = divmod(seconds, 86400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{_day_text(day)[0]}T{hour:02d}:{minute:02d}:{second:02d}.{frac:07d}Z"


@lru_cache(maxsize=16)
def format_issued(ticks: int) -> str:
    """``2023-11-14T23:00:05.1234567+00:00``: how MedTech writes ``issued``."""
    return format_period_instant(ticks)[:-1] + "+00:00"


def format_identifier_segment(ticks: int) -> str:
    """``yyyyMMddHHmmssZ``: seconds only, as in the Observation identifier."""
    day, rest = divmod(ticks // TICKS_PER_SECOND, 86400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{_day_text(day)[1]}{hour:02d}{minute:02d}{second:02d}Z"


_TWO_DIGITS = [f"{i:02d}" for i in range(60)]


@lru_cache(maxsize=4096)
def _minute_text(minutes: int) -> tuple[str, str]:
    day, rest = divmod(minutes, 1440)
    hour, minute = divmod(rest, 60)
    iso_day, compact_day = _day_text(day)
    return f"{iso_day}T{hour:02d}:{minute:02d}:", f"{compact_day}{hour:02d}{minute:02d}"


def format_instant_texts(ticks: int) -> tuple[str, str]:
    """``(format_period_instant(ticks), format_identifier_segment(ticks))``, the minute text cached."""
    seconds, frac = divmod(ticks, TICKS_PER_SECOND)
    minutes, second = divmod(seconds, 60)
    iso_minute, compact_minute = _minute_text(minutes)
    two = _TWO_DIGITS[second]
    return iso_minute + two + "." + str(frac).zfill(7) + "Z", compact_minute + two + "Z"


def format_dotnet_default(ticks: int) -> str:
    """A DateTime turned into text with the invariant culture (``MM/dd/yyyy HH:mm:ss``)."""
    t, _ = _calendar(ticks)
    return f"{t.tm_mon:02d}/{t.tm_mday:02d}/{t.tm_year:04d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def ticks_from_datetime(moment: datetime) -> int:
    """An aware or naive (taken as UTC) datetime to ticks."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def now_ticks() -> int:
    return time.time_ns() // 100
