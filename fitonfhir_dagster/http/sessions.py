"""The one ``requests.Session`` factory of the product: the Fit, Health and FHIR clients and the onboarding app."""

from __future__ import annotations

from functools import cache
from importlib import metadata

import requests
from requests.adapters import HTTPAdapter

# A run imports ``import_workers`` users side by side (default 4) and each sends up to 4 FHIR Bundles at
# once (pipeline.observations.CHUNKS_IN_FLIGHT) through one shared FHIR client: 32 keeps every worker
# thread on a pooled connection with room for more workers.
DEFAULT_POOL_SIZE = 32


@cache
def user_agent() -> str:
    """The product and its version, then requests' own token: ``fitonfhir-dagster/0.1.0 python-requests/2.32.3``."""
    try:
        version = metadata.version("fitonfhir-dagster")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "0+unknown"
    return f"fitonfhir-dagster/{version} python-requests/{requests.__version__}"


def new_session(pool_size: int = DEFAULT_POOL_SIZE) -> requests.Session:
    """A session whose connection pool holds ``pool_size`` connections per host and that names us."""
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent()
    return session
