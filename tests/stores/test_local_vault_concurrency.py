"""The local vault's key is created on first use: processes starting together (a Dagster run launching
several steps, the onboarding app) must all adopt one key, or tokens written by one become unreadable
to the others."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

from fitonfhir_dagster.stores.vault import LocalTokenVault

WORKERS = 6
ROUNDS = 25  # fresh vault directories, each created by every worker at once


def _token(worker: int, round_: int) -> str:
    return f"1//refresh-of-worker-{worker}-round-{round_}"


def _user_key(worker: int) -> str:
    return f"u-worker{worker:04d}"


def _open_and_store(root: str, worker: int, start: Barrier) -> None:
    start.wait()
    for round_ in range(ROUNDS):
        vault = LocalTokenVault(Path(root) / f"vault-{round_}")
        vault.put(_user_key(worker), _token(worker, round_))


def test_processes_creating_the_vault_at_once_share_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    workers = [ctx.Process(target=_open_and_store, args=(str(tmp_path), i, start)) for i in range(WORKERS)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [p.exitcode for p in workers] == [0] * WORKERS

    for round_ in range(ROUNDS):
        directory = tmp_path / f"vault-{round_}"
        vault = LocalTokenVault(directory)
        for worker in range(WORKERS):
            assert vault.get(_user_key(worker)) == _token(worker, round_), f"round {round_}, worker {worker}"
        assert sorted(p.name for p in directory.iterdir()) == sorted(
            ["vault.key", *(f"{_user_key(w)}.token" for w in range(WORKERS))]
        ), "no temporary files are left behind"
        assert (directory / "vault.key").stat().st_mode & 0o777 == 0o600
