"""MedTech device messages from archived Google Health pages: one message per page and data source.

Shape (the Fit contract's counterpart): ``{"source": "google-health", "dataType", "view", "point": [...],
"patientIdentifier": <Google sub>, "deviceIdentifier": ...}``. The page's ``dataPoints`` travel as ``point``
so the converter accounts for every item as it does for Fit. A list page mixes data sources, so it is split
by source: ``deviceIdentifier`` is ``<sub>.google-health.<platform>.<package>.<device>`` (blank parts left
out; reconciled points, which carry no source, get ``<sub>.google-health.reconciled``). With the type name
and the time it makes the Observation identity: a re-import yields the same ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ..fitmapping.device_messages import DeviceMessage

SOURCE = "google-health"
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def _part(text: Any) -> str:
    return _UNSAFE.sub("-", str(text or "").strip().lower()).strip("-")


def device_identifier(google_sub: str, data_source: Mapping[str, Any] | None) -> str:
    if not data_source:
        return f"{google_sub}.{SOURCE}.reconciled"
    device = data_source.get("device") or {}
    parts = [
        _part(data_source.get("platform")),
        _part((data_source.get("application") or {}).get("packageName")),
        _part(" ".join(str(device.get(k) or "") for k in ("manufacturer", "displayName"))),
    ]
    kept = [p for p in parts if p]
    return ".".join([google_sub, SOURCE, *(kept or ["unknown-source"])])


def build_health_messages(
    google_sub: str, data_type: str, view: str, pages: Iterable[Mapping[str, Any]]
) -> list[DeviceMessage]:
    """One message per (page, data source), in page order; every point goes into exactly one message."""
    messages = []
    for page in pages:
        groups: dict[str, list[Any]] = {}
        for point in page.get("point") or []:
            groups.setdefault(device_identifier(google_sub, point.get("dataSource")), []).append(point)
        for device, points in groups.items():
            body = orjson.dumps(
                {
                    "source": SOURCE,
                    "dataType": data_type,
                    "view": view,
                    "point": points,
                    "patientIdentifier": google_sub,
                    "deviceIdentifier": device,
                }
            )
            messages.append(DeviceMessage(body, f"{SOURCE}:{data_type}", len(points)))
    return messages


def health_point_identity(data_type: str, point: Mapping[str, Any]) -> tuple[str, str]:
    """What makes a Health point unique within a user: its type and its whole content (the Health
    counterpart of ``fitmapping.device_messages.fit_point_identity``)."""
    return data_type, orjson.dumps(point, option=orjson.OPT_SORT_KEYS).decode()  # str: see fit_point_identity
