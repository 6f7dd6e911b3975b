"""`make dev`: the embedded default kept running, with the Dagster UI on top.

Starts the sandbox and the onboarding app (on FITONFHIR_ONBOARDING_URL's port), onboards sandbox users so
the users_sensor has someone to import, then runs `dagster dev` until Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from fitonfhir_dagster.settings import Settings

from .local_services import demo_start_date, local_services, prepare_dagster_home
from .onboarding_driver import onboard_sandbox_user

ROOT = Path(__file__).resolve().parent.parent


def run_dev(n_users: int) -> None:
    demo_start_date(int(os.environ.get("FITONFHIR_INITIAL_DAYS", "30")))
    settings = Settings.from_env()
    dagster_home = prepare_dagster_home(settings)
    port = urlsplit(settings.onboarding_url).port or 8000
    with local_services(settings, onboarding_port=port) as running:
        for i in range(1, n_users + 1):
            onboard_sandbox_user(running.onboarding_url, i)
        print(f"sandbox (Google + FHIR): {running.sandbox_url}  (FHIR: {running.fhir_url})")
        print(f"onboarding app:          {running.onboarding_url}  (connect more sandbox accounts here)")
        print(f"Dagster home:            {dagster_home}")
        workspace = ROOT / "workspace.yaml"
        cmd = (
            [sys.executable, "-m", "dagster", "dev", "-w", str(workspace)]
            if workspace.exists()
            else [sys.executable, "-m", "dagster", "dev", "-m", "fitonfhir_dagster.definitions"]
        )
        env = os.environ | {
            "DAGSTER_HOME": str(dagster_home),
            "FITONFHIR_ONBOARDING_URL": running.onboarding_url,
        }
        process = subprocess.Popen(cmd, env=env)
        try:
            process.wait()
        except KeyboardInterrupt:
            process.terminate()
            process.wait(timeout=30)
