"""Google Fit behind the seam, wrapping today's client and device messages unchanged."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

import orjson

from ..fitmapping.device_messages import DeviceMessage, build_device_messages, fit_point_identity
from ..googlefit import fit_errors
from ..googlefit.fit_client import GoogleFitClient, select_streams
from ..settings import Settings
from ..stores.users import GOOGLE_FIT, User
from .seam import OnRefreshToken, SourceError


class GoogleFitSource:
    name = GOOGLE_FIT

    def fetch_window(
        self,
        settings: Settings,
        user: User,
        refresh_token: str,
        first_day: date,
        last_day: date,
        on_refresh_token: OnRefreshToken,
    ) -> dict[date, dict[str, Any]]:
        """The same document ``pipeline.datasets`` archives, one Fit day fetch per day of the window."""
        client = GoogleFitClient(
            settings, refresh_token, on_refresh_token=on_refresh_token, bad_points="collect"
        )
        documents: dict[date, dict[str, Any]] = {}
        try:
            sources = select_streams(client.list_data_sources(), settings.stream_policy, settings.data_types)
            day = first_day
            while day <= last_day:
                fetched = client.fetch_day(day, sources)
                documents[day] = {
                    "source": GOOGLE_FIT,
                    "date": day.isoformat(),
                    "googleSub": user.google_sub,
                    "window": {"startNs": fetched.start_ns, "endNs": fetched.end_ns},
                    "sources": sources,
                    "pages": {
                        stream: [p.dataset for p in pages] for stream, pages in fetched.streams.items()
                    },
                    "badPoints": [
                        {
                            "stream": p.stream_id,
                            "page": p.page_index,
                            "reason": bad.reason,
                            "point": bad.point,
                        }
                        for p in fetched.pages
                        for bad in p.bad_points
                    ],
                    "stats": fetched.stats.as_dict(),
                }
                day += timedelta(days=1)
        except fit_errors.ConsentRevoked:
            raise
        except fit_errors.GoogleFitError as exc:
            error = SourceError(f"{type(exc).__name__}: {exc}")
            error.retryable = exc.retryable
            raise error from exc
        finally:
            client.close()
        return documents

    def device_messages(self, document: dict[str, Any], google_sub: str) -> list[DeviceMessage]:
        sources = {s["dataStreamId"]: s for s in document.get("sources", [])}
        return [
            message
            for stream_id, pages in document["pages"].items()
            for message in build_device_messages(
                google_sub, sources.get(stream_id, {"dataStreamId": stream_id}), pages
            )
        ]

    def point_identities(self, document: dict[str, Any]) -> Counter[tuple[Any, ...]]:
        return Counter(
            fit_point_identity(stream_id, point)
            for stream_id, pages in document["pages"].items()
            for page in pages
            for point in page.get("point", [])
        )

    def message_point_identities(self, messages: list[DeviceMessage]) -> Counter[tuple[Any, ...]]:
        # The stream each message was built from, not its body's dataSourceId: a page Google sent
        # without one must still be accounted to its stream (issue 9).
        return Counter(
            fit_point_identity(message.data_source_id, point)
            for message in messages
            for point in orjson.loads(message.body).get("point", [])
        )

    def points_by_type(self, document: dict[str, Any]) -> Counter[str]:
        return Counter(
            str(point.get("dataTypeName"))
            for pages in document["pages"].values()
            for page in pages
            for point in page.get("point", [])
        )
