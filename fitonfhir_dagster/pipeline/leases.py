"""One run's import leases (issue 9): two runs never import the same user at the same time.

Dagster's run-tag limits cannot say "one run per user" for batched runs (a run holds many users, and range
runs carry no per-user tag), and FHIR R4 has no create-only PUT, so two overlapping runs of one user would
both write its new Observations. Instead the runner holds the user's lease in the users table
(:meth:`~fitonfhir_dagster.stores.users.UsersTable.claim_import`) from before the user's window is fetched
until their last day is done. The owner is the Dagster run id. A run that finds another live owner waits
(polling, interruptible by the runner's stop) for at most ``FITONFHIR_USER_LEASE_WAIT_SECONDS``, then fails
that user's days with a retryable :class:`UserBusy` naming the holder; its other users carry on. After the
wait the steps see what the first run wrote: its fingerprints and Observations, so nothing is written twice.

A lease lives ``FITONFHIR_USER_LEASE_TTL_SECONDS``. It is renewed after each user-day and by a heartbeat
every quarter of the TTL (a slow day or a long window fetch keeps it), so only a killed run's lease expires;
the next run then takes it over. A run that finds its lease taken over (it could not renew for a whole TTL)
stops that user with :class:`LeaseLost`.

An erasure (``pipeline.erasure``) holds the same lease while it deletes, so no import writes a user's days
while they are being erased.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator

from ..stores.users import UsersTable
from .step_errors import TransientUserDayError

log = logging.getLogger(__name__)

LEASE_POLL_SECONDS = 1.0  # how often a waiting run asks whether the lease is free


class UserBusy(TransientUserDayError):
    """Another run held the user's import lease for the whole wait; a later retry will get it."""


class LeaseLost(TransientUserDayError):
    """This run's lease on the user expired and another run took it; the user's remaining days are left to it."""


def local_owner() -> str:
    """The owner of a run that is not a Dagster run (a test, a script): unique per call."""
    return f"local-{uuid.uuid4()}"


class ImportLeases:
    """The leases one run holds on its users: :meth:`acquire` before a user's first step, :meth:`renew`
    after each user-day, :meth:`release` at the end; :meth:`heartbeat` renews every held lease meanwhile."""

    def __init__(
        self,
        users: UsersTable,
        owner: str,
        *,
        ttl_seconds: float,
        wait_seconds: float,
        poll_seconds: float = LEASE_POLL_SECONDS,
    ) -> None:
        self.users = users
        self.owner = owner
        self.ttl_seconds = ttl_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self._held: set[str] = set()
        self._lock = threading.Lock()
        # a heartbeat renewal and a release of the same lease never interleave: a renewal landing just
        # after the release would claim the lease again and leave it behind until its TTL
        self._beat = threading.Lock()

    def acquire(self, user_key: str, stop: threading.Event) -> str | None:
        """Claim the user's lease, waiting for another holder up to ``wait_seconds``. None once it is ours;
        otherwise the owner that kept it (when the wait ran out, or ``stop`` was set while waiting)."""
        deadline = time.monotonic() + self.wait_seconds
        waited_for: str | None = None
        while True:
            if self.users.claim_import(user_key, self.owner, self.ttl_seconds):
                with self._lock:
                    self._held.add(user_key)
                if waited_for is not None:
                    log.info(
                        "user %s: run %s has the import lease now (run %s released it or let it expire)",
                        user_key,
                        self.owner,
                        waited_for,
                    )
                return None
            holder = self.users.import_holder(user_key)
            remaining = deadline - time.monotonic()
            if holder is None:  # released or expired between the two calls: claim again almost at once
                if remaining > 0:
                    if stop.wait(min(0.05, remaining)):
                        return "(unknown)"
                    continue
                holder = "(unknown)"
            if remaining <= 0:
                return holder
            if waited_for != holder:
                log.info(
                    "user %s is being imported by run %s; run %s waits up to %.0f s for it",
                    user_key,
                    holder,
                    self.owner,
                    remaining,
                )
                waited_for = holder
            if stop.wait(min(self.poll_seconds, remaining)):
                return holder

    def renew(self, user_key: str) -> bool:
        """Extend our lease; False when another run has taken it over. A failing users table is not a lost
        lease: it is logged and the lease stays ours until its TTL (the heartbeat keeps trying)."""
        try:
            renewed = self.users.claim_import(user_key, self.owner, self.ttl_seconds)
        except Exception as exc:  # the users table is briefly unreachable: not a reason to stop a user
            log.warning("user %s: could not renew the import lease of run %s: %s", user_key, self.owner, exc)
            return True
        if not renewed:
            with self._lock:
                self._held.discard(user_key)
        return renewed

    def renew_all(self) -> None:
        with self._lock:
            held = sorted(self._held)
        for user_key in held:
            with self._beat:
                with self._lock:
                    if user_key not in self._held:
                        continue  # released meanwhile
                if not self.renew(user_key):
                    log.warning("user %s: run %s lost its import lease to another run", user_key, self.owner)

    def release(self, user_key: str) -> None:
        """Give the lease up (never another owner's); a failure only leaves it to expire."""
        with self._beat:
            with self._lock:
                self._held.discard(user_key)
            try:
                self.users.release_import(user_key, self.owner)
            except Exception as exc:  # it expires after its TTL anyway
                log.warning(
                    "user %s: could not release the import lease of run %s: %s", user_key, self.owner, exc
                )

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Renew every held lease every quarter of the TTL while the block runs (a daemon thread)."""
        done = threading.Event()
        interval = max(0.05, self.ttl_seconds / 4)

        def beat() -> None:
            while not done.wait(interval):
                self.renew_all()

        thread = threading.Thread(target=beat, name="fitonfhir-lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=30)
