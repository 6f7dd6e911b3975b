"""Dagster metadata built from the pipeline's plain summaries."""

from __future__ import annotations

import dagster as dg

from ..pipeline.datasets import DatasetsSummary, ValueStats
from ..pipeline.messages import MessagesSummary
from ..pipeline.observations import ObservationsSummary


def points_table(value_stats: dict[str, ValueStats]) -> dg.TableMetadataValue:
    """Count/min/max/mean of the first value of every point, per data type."""
    records = [
        dg.TableRecord(
            {
                "data_type": data_type,
                "count": stats.count,
                "min": round(stats.low, 3),
                "max": round(stats.high, 3),
                "mean": round(stats.mean, 3),
            }
        )
        for data_type, stats in sorted(value_stats.items())
        if stats.count
    ]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("data_type", "string"),
            dg.TableColumn("count", "int"),
            dg.TableColumn("min", "float"),
            dg.TableColumn("max", "float"),
            dg.TableColumn("mean", "float"),
        ]
    )
    return dg.MetadataValue.table(records, schema)


def datasets_metadata(s: DatasetsSummary) -> dict[str, dg.MetadataValue]:
    meta: dict[str, dg.MetadataValue] = {
        "points": dg.MetadataValue.int(s.points),
        "streams": dg.MetadataValue.int(s.streams),
        "pages": dg.MetadataValue.int(s.pages),
        "api_calls": dg.MetadataValue.int(s.api_calls),
        "bytes": dg.MetadataValue.int(s.bytes),
        "bad_points": dg.MetadataValue.int(s.bad_points),
        "points_left_to_start_day": dg.MetadataValue.int(s.dropped_outside_day),
        "duplicate_points_dropped": dg.MetadataValue.int(s.duplicates),
        "fields_supplied_from_request": dg.MetadataValue.int(s.supplied_fields),
        "points_by_type": points_table(s.value_stats),
    }
    return meta


def messages_metadata(s: MessagesSummary) -> dict[str, dg.MetadataValue]:
    return {
        "messages": dg.MetadataValue.int(s.messages),
        "points": dg.MetadataValue.int(s.points),
        "bytes": dg.MetadataValue.int(s.bytes),
        "batches": dg.MetadataValue.int(s.batches),
        "published_to_event_hub": dg.MetadataValue.bool(s.published),
    }


def observations_metadata(s: ObservationsSummary) -> dict[str, dg.MetadataValue]:
    return {
        "observations": dg.MetadataValue.int(s.observations),
        "created": dg.MetadataValue.int(s.created),
        "updated": dg.MetadataValue.int(s.updated),
        "unchanged": dg.MetadataValue.int(s.unchanged),
        "dead_lettered": dg.MetadataValue.int(s.dead_letters),
        "dead_letter_reasons": dg.MetadataValue.json(s.dead_letter_reasons),
        "points_in": dg.MetadataValue.int(s.points_in),
        "points_unmatched": dg.MetadataValue.int(s.points_unmatched),
    }
