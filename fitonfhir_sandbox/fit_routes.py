"""Google Fit REST v1 (``users/me/dataSources`` and ``datasets``), served from synthetic data."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fitonfhir_sandbox import synthetic
from fitonfhir_sandbox.accounts import heavy_points_per_day
from fitonfhir_sandbox.context import GoogleSandbox
from fitonfhir_sandbox.faults import corrupt_dataset, google_error
from fitonfhir_sandbox.google_state import TokenInfo
from fitonfhir_sandbox.oauth_routes import bearer

FIT_PREFIX = "/fitness/v1/users/{user_id}"
_JSON = "application/json; charset=UTF-8"
_DATASET_RE = re.compile(r"^(\d{1,19})-(\d{1,19})$")
_INT64_MAX = 2**63 - 1
_SCOPE_FAMILY = {
    "com.google.step_count.delta": "activity",
    "com.google.heart_minutes": "activity",
    "com.google.heart_rate.bpm": "heart_rate",
    "com.google.weight": "body",
    "com.google.height": "body",
    "com.google.body.fat.percentage": "body",
    "com.google.blood_pressure": "blood_pressure",
    "com.google.blood_glucose": "blood_glucose",
    "com.google.oxygen_saturation": "oxygen_saturation",
    "com.google.body.temperature": "body_temperature",
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_INDENT_2), status_code=status, media_type=_JSON)


def _error(status: int, message: str, reason: str | None = None) -> Response:
    return Response(google_error(status, message, reason), status_code=status, media_type=_JSON)


def scope_allows(scope: str, type_name: str) -> bool:
    """Reading a type needs its family's ``.read`` (or ``.write``) Fit scope."""
    family = _SCOPE_FAMILY.get(type_name)
    granted = scope.split()
    return family is not None and any(
        f"https://www.googleapis.com/auth/fitness.{family}.{mode}" in granted for mode in ("read", "write")
    )


class FitRoutes:
    def __init__(self, ctx: GoogleSandbox) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route(FIT_PREFIX + "/dataSources", self.list_sources, methods=["GET"]),
            Route(FIT_PREFIX + "/dataSources/{stream_id}", self.get_source, methods=["GET"]),
            Route(
                FIT_PREFIX + "/dataSources/{stream_id}/datasets/{dataset_id}",
                self.get_dataset,
                methods=["GET"],
            ),
        ]

    def _caller(self, request: Request) -> TokenInfo | Response:
        info = bearer(self.ctx, request)
        if isinstance(info, Response):
            return info
        user_id = request.path_params["user_id"]
        if user_id != "me":
            return _error(
                403, f"Cannot access data of user {user_id!r}: only 'me' is supported.", "forbidden"
            )
        return info

    def _visible_sources(self, info: TokenInfo) -> list[dict[str, Any]]:
        orphan = self.ctx.faults.orphan_source_for(info.grant.sub)
        return [
            s
            for s in synthetic.user_sources(info.grant.sub, orphan=orphan)
            if scope_allows(info.grant.scope, s["dataType"]["name"])
        ]

    async def list_sources(self, request: Request) -> Response:
        info = self._caller(request)
        if isinstance(info, Response):
            return info
        wanted = set(request.query_params.getlist("dataTypeName"))
        sources = [s for s in self._visible_sources(info) if not wanted or s["dataType"]["name"] in wanted]
        return _json({"dataSource": sources})

    def _source(self, info: TokenInfo, stream_id: str) -> dict[str, Any] | Response:
        for source in self._visible_sources(info):
            if source["dataStreamId"] == stream_id:
                return source
        return _error(404, f"DataSourceId not found: {stream_id}", "notFound")

    async def get_source(self, request: Request) -> Response:
        info = self._caller(request)
        if isinstance(info, Response):
            return info
        source = self._source(info, request.path_params["stream_id"])
        return source if isinstance(source, Response) else _json(source)

    async def get_dataset(self, request: Request) -> Response:
        info = self._caller(request)
        if isinstance(info, Response):
            return info
        dataset_id = request.path_params["dataset_id"]
        match = _DATASET_RE.match(dataset_id)
        start, end = (int(match.group(1)), int(match.group(2))) if match else (0, -1)
        if not match or start > _INT64_MAX or end > _INT64_MAX or start > end:
            return _error(
                400,
                f"Invalid dataset id {dataset_id!r}: expected '<startNanos>-<endNanos>' with start <= end "
                "(non-negative 64-bit integers).",
                "invalidArgument",
            )
        raw_limit = request.query_params.get("limit")
        limit = None
        if raw_limit is not None:
            if not raw_limit.isdigit() or int(raw_limit) < 1:
                return _error(
                    400, f"Invalid value for limit: {raw_limit!r} (positive integer).", "invalidArgument"
                )
            limit = int(raw_limit)
        stream_id = request.path_params["stream_id"]
        source = self._source(info, stream_id)
        if isinstance(source, Response):
            return source
        try:
            body = synthetic.dataset(
                info.grant.sub,
                stream_id,
                start,
                end,
                now_ms=int(self.ctx.clock() * 1000),
                limit=limit,
                page_token=request.query_params.get("pageToken") or None,
                heavy=heavy_points_per_day(info.grant.email),
                orphan=self.ctx.faults.orphan_source_for(info.grant.sub),
            )
        except synthetic.BadPageToken as exc:
            return _error(400, str(exc), "invalidArgument")
        malformed = getattr(request.state, "sandbox_malformed", None)
        if malformed:
            return Response(corrupt_dataset(body, malformed), media_type=_JSON)
        return _json(body)
