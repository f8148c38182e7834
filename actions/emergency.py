"""Emergency capture on Heroku: ask the source whether a capture runs, protect the manual backup the capture
would expire, `POST .../backups`, then follow the transfer to its end the way `pg:backups:capture` does
(reference 1.1 and 1.4).

Heroku keeps a limited number of manual backups per plan and expires the oldest one when a capture needs the
room (reference 5.3). The limit is read from the transfers themselves (`num_keep` of the manual ones); when the
database already holds that many, `expiring_backup` names the one that would go, so the caller can archive it
first (or say in the audit record why not).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger

from collectors.heroku import STUCK_AFTER, is_backup, parse_timestamp, transfer_name
from daemon.adapters.heroku import HerokuAPI, HerokuError, HerokuGone
from daemon.core.errors import CaptureError, StoppedByShutdown

#: The CLI stops following after this many failed polls (cumulative, not consecutive; reference 1.4).
MAX_POLL_FAILURES = 21


@dataclass(frozen=True)
class Expiring:
    """The manual backup a capture would expire (or None), and what the limit is."""

    backup_id: str | None
    limit: int | None
    held: int


def _mine(t: dict[str, Any], from_names: set[str]) -> bool:
    return is_backup(t) and (not from_names or t.get("from_name") in from_names)


def running_capture(transfers: list[dict[str, Any]], from_names: set[str], now: datetime) -> str | None:
    """The name of a backup of this database that has not finished (stuck ones older than a day excepted)."""
    for t in transfers:
        if not _mine(t, from_names) or t.get("finished_at") or t.get("deleted_at") or t.get("canceled_at"):
            continue
        begun = parse_timestamp(t.get("started_at")) or parse_timestamp(t.get("created_at"))
        if begun is not None and now - begun < STUCK_AFTER:
            return transfer_name(t)
    return None


def expiring_backup(transfers: list[dict[str, Any]], from_names: set[str]) -> Expiring:
    """The oldest manual backup when the database's manual backups are at the plan's limit (`num_keep`)."""
    manual = [t for t in transfers if _mine(t, from_names) and t.get("schedule") is None
              and not t.get("deleted_at") and not t.get("purged_at") and t.get("finished_at") and t.get("succeeded")]
    limits = [t["num_keep"] for t in manual if isinstance(t.get("num_keep"), int) and t["num_keep"] > 0]
    limit = limits[-1] if limits else None
    if limit is None or len(manual) < limit:
        return Expiring(None, limit, len(manual))
    oldest = min(manual, key=lambda t: parse_timestamp(t.get("created_at")) or datetime.max.replace(tzinfo=UTC))
    return Expiring(transfer_name(oldest), limit, len(manual))


class HerokuCapture:
    """Starts and follows one Heroku capture. `closing` cuts a follow short at shutdown."""

    def __init__(self, api: HerokuAPI, clock: Callable[[], datetime], closing: threading.Event,
                 poll_interval: timedelta, timeout: timedelta) -> None:
        self.api = api
        self.clock = clock
        self.closing = closing
        self.poll_interval = poll_interval.total_seconds()
        self.timeout = timeout

    def start(self, addon_id: str) -> dict[str, Any]:
        """POST the capture (never retried once sent). Raises HerokuError."""
        transfer = self.api.capture(addon_id)
        if not transfer.get("uuid"):
            raise CaptureError("Heroku accepted the capture but returned no transfer uuid")
        return transfer

    def follow(self, app: str, transfer: dict[str, Any],
               progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll `GET /apps/{app}/transfers/{uuid}` until `finished_at`; returns the final transfer (with `logs`
        when it failed). Raises CaptureError on timeout or after 21 failed polls, StoppedByShutdown when the
        shutdown comes first."""
        uuid = str(transfer["uuid"])
        deadline = self.clock() + self.timeout
        failures = 0
        current = transfer
        while not current.get("finished_at"):
            if self.clock() >= deadline:
                raise CaptureError(f"capture {transfer_name(current)} still running after "
                                   f"{self.timeout}; stopped following it (Heroku may still finish it)")
            if self.closing.wait(self.poll_interval):  # not a failed capture: it goes on at Heroku
                raise StoppedByShutdown(f"shutting down while capture {transfer_name(current)} runs; it goes on "
                                        "at Heroku and the next collection sees its end")
            try:
                current = self.api.transfer_info(app, uuid)
            except HerokuGone:  # someone deleted it (pg:backups:delete): no backup will come of it, say so now
                raise CaptureError(f"capture {transfer_name(current)} was deleted at Heroku while it ran (410 Gone): "
                                   "no backup came of it") from None
            except HerokuError as exc:
                failures += 1
                logger.warning("following capture {}: poll failed ({} of {}): {}", transfer_name(current),
                               failures, MAX_POLL_FAILURES, exc)
                if failures >= MAX_POLL_FAILURES:
                    raise CaptureError(f"lost track of capture {transfer_name(current)} after {failures} failed "
                                       f"polls: {exc}") from None
                continue
            if progress is not None:
                progress(current)
        if not current.get("succeeded"):
            try:  # the CLI re-reads with verbose=true and shows the last 5 log lines
                current = self.api.transfer_info(app, uuid, verbose=True)
            except HerokuError as exc:
                logger.debug("logs of the failed capture unavailable: {}", exc)
        return current


def failure_text(transfer: dict[str, Any]) -> str:
    """The last five log lines of a failed transfer, as the CLI prints them."""
    logs = [str(x.get("message", "")) for x in (transfer.get("logs") or []) if isinstance(x, dict)]
    state = "canceled" if transfer.get("canceled_at") else "failed"
    return f"{transfer_name(transfer)} {state}" + (": " + " | ".join(logs[-5:]) if logs else "")
