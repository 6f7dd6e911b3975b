"""`fitonfhir users erase KEY`: erase one user (FHIR Observations, archive, token, partition), audited.

Registered as ``users.erase`` in the ``fitonfhir.commands`` entry points. The Dagster instance is the one of
``--dagster-home``, else ``DAGSTER_HOME``, else ``$FITONFHIR_HOME/dagster`` (what `make demo`/`make dev` use);
without one the erasure cannot check for runs in flight and is refused.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from ..settings import Settings


def _dagster_home(option: Path | None, settings: Settings) -> Path:
    home = option or (
        Path(os.environ["DAGSTER_HOME"]) if os.environ.get("DAGSTER_HOME") else settings.home / "dagster"
    )
    if not (home / "dagster.yaml").is_file() and not home.is_dir():
        raise click.UsageError(
            f"no Dagster instance at {home}: pass --dagster-home or set DAGSTER_HOME (needed to refuse an "
            "erasure while a run of the user is in flight)"
        )
    return home.resolve()


@click.command("erase")
@click.argument("key")
@click.option(
    "--dagster-home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The Dagster instance to check for runs in flight (default: DAGSTER_HOME, else $FITONFHIR_HOME/dagster).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase(key: str, dagster_home: Path | None, yes: bool) -> None:
    """Erase user KEY: their Observations (and Devices/Patient in identity mode create) on the FHIR server,
    their archive objects and dead letters, their refresh token and their Dagster partition; the users row
    stays, marked `erased`. Refused while a run of the user is queued or running, or an import keeps the
    user's import lease past FITONFHIR_USER_LEASE_WAIT_SECONDS."""
    import dagster as dg

    from ..defs.erasure import erase as erase_user
    from ..fhir.fhir_client import FhirClient
    from ..pipeline.erasure import ErasureError
    from ..pipeline.step_stores import StepStores
    from ..stores.keys import check_user_key

    try:
        check_user_key(key)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY") from exc
    settings = Settings.from_env()
    stores = StepStores.open(settings)
    if stores.users.get(key) is None:
        raise click.ClickException(f"no user with key {key!r} (see `fitonfhir users list`)")
    home = _dagster_home(dagster_home, settings)
    if not yes:
        click.confirm(
            f"Erase every Observation, archive object and the token of {key}? This cannot be undone",
            abort=True,
        )
    # a wait for an import's lease can last FITONFHIR_USER_LEASE_WAIT_SECONDS: say whom it waits for
    waiting = logging.StreamHandler(sys.stderr)
    waiting.setFormatter(logging.Formatter("%(message)s"))
    leases_log = logging.getLogger("fitonfhir_dagster.pipeline.leases")
    level = leases_log.level
    leases_log.addHandler(waiting)
    leases_log.setLevel(logging.INFO)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            summary = erase_user(instance, stores, FhirClient.from_settings(settings), key)
    except ErasureError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        leases_log.removeHandler(waiting)
        leases_log.setLevel(level)
    click.echo(
        f"erased {key}: {summary.observations} Observations, {summary.devices} Devices, {summary.patients} "
        f"Patients, {summary.archive_objects} archive objects ({summary.dead_letter_objects} dead letters), "
        f"token {'deleted' if summary.token_deleted else 'absent'}, partition "
        f"{'removed' if summary.partition_removed else 'absent'}"
    )
    click.echo(summary.audit_json().decode())
