"""Shared inputs for the template generation tests: the original project's sample files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ORIGINAL_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "original-fit-on-fhir"


@pytest.fixture
def fixture_dir() -> Path:
    return ORIGINAL_FIXTURES


@pytest.fixture
def sample_sources() -> dict[str, Any]:
    """The original's Samples/dataSources.json: a list response with 34 sources of 10 types."""
    return json.loads((ORIGINAL_FIXTURES / "dataSources.json").read_text("utf-8"))
