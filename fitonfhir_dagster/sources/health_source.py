"""Google Health behind the seam: one fetch per type for the window, archived per day as fetched."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

import orjson

from ..fitmapping.device_messages import DeviceMessage
from ..googlehealth import health_errors
from ..googlehealth.health_catalog import TYPES
from ..googlehealth.health_client import GoogleHealthClient
from ..healthmapping.health_messages import build_health_messages, health_point_identity
from ..settings import Settings
from ..stores.users import GOOGLE_HEALTH, User
from .seam import OnRefreshToken, SourceError, UserMustAct


class GoogleHealthSource:
    name = GOOGLE_HEALTH

    def fetch_window(
        self,
        settings: Settings,
        user: User,
        refresh_token: str,
        first_day: date,
        last_day: date,
        on_refresh_token: OnRefreshToken,
    ) -> dict[date, dict[str, Any]]:
        client = GoogleHealthClient(settings, refresh_token, on_refresh_token=on_refresh_token)
        try:
            window = client.fetch_window(first_day, last_day)
        except health_errors.AccountNotLinked as exc:
            raise UserMustAct(str(exc)) from exc
        except health_errors.GoogleHealthError as exc:
            error = SourceError(f"{type(exc).__name__}: {exc}")
            error.retryable = exc.retryable
            raise error from exc
        finally:
            client.close()
        documents = {}
        stats = window.stats.as_dict()
        for day, types in window.days.items():
            documents[day] = {
                "source": GOOGLE_HEALTH,
                "date": day.isoformat(),
                "googleSub": user.google_sub,
                "healthUserId": window.health_user_id,
                "view": window.view,
                "window": {"firstDay": first_day.isoformat(), "lastDay": last_day.isoformat()},
                "pages": {
                    name: [{"page": p.page_index, "point": p.points} for p in pages if p.points]
                    for name, pages in types.items()
                },
                "badPoints": [
                    {"type": name, "page": p.page_index, "reason": bad.reason, "point": bad.point}
                    for name, pages in types.items()
                    for p in pages
                    for bad in p.bad_points
                ],
                "stats": stats,  # the window's counters (one fetch served every day of it)
            }
        return documents

    def device_messages(self, document: dict[str, Any], google_sub: str) -> list[DeviceMessage]:
        view = str(document.get("view", "list"))
        return [
            message
            for data_type, pages in document["pages"].items()
            for message in build_health_messages(google_sub, data_type, view, pages)
        ]

    def point_identities(self, document: dict[str, Any]) -> Counter[tuple[Any, ...]]:
        return Counter(
            health_point_identity(data_type, point)
            for data_type, pages in document["pages"].items()
            for page in pages
            for point in page.get("point", [])
        )

    def message_point_identities(self, messages: list[DeviceMessage]) -> Counter[tuple[Any, ...]]:
        bodies = [orjson.loads(message.body) for message in messages]
        return Counter(
            health_point_identity(str(body.get("dataType")), point)
            for body in bodies
            for point in body.get("point", [])
        )

    def points_by_type(self, document: dict[str, Any]) -> Counter[str]:
        return Counter(
            {
                data_type: sum(len(p.get("point", [])) for p in pages)
                for data_type, pages in document["pages"].items()
            }
        )


def first_values(document: dict[str, Any]) -> dict[str, list[float]]:
    """Each type's readings (the catalog's value field), for the summary's value ranges."""
    values: dict[str, list[float]] = {}
    for data_type, pages in document["pages"].items():
        health_type = TYPES.get(data_type)
        if health_type is None:
            continue
        for page in pages:
            for point in page.get("point", []):
                number = (point.get(health_type.member) or {}).get(health_type.value_field)
                if isinstance(number, int | float):
                    values.setdefault(data_type, []).append(float(number))
    return values
