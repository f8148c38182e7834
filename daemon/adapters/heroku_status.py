"""Heroku's public status API (status.heroku.com): `GET /api/v4/current-status`, the call `heroku status` makes.

Public and unauthenticated: the Heroku API key is never sent there. One short call, no retries (the next poll
is the retry): a timeout, a transport error, a non-2xx answer or a body that is not JSON raise `CollectorError`
with a message that says which, so the caller's boundary marks the collector down and nothing else changes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from daemon.core.errors import CollectorError

CURRENT_STATUS_PATH = "/api/v4/current-status"


class HerokuStatusClient:
    """Reads the current status document; `close()` releases its connections."""

    def __init__(self, base_url: str, timeout: timedelta, transport: httpx.BaseTransport | None = None) -> None:
        self.url = base_url.rstrip("/") + CURRENT_STATUS_PATH
        self.timeout = timeout
        self._http = httpx.Client(timeout=httpx.Timeout(timeout.total_seconds()), transport=transport,
                                  follow_redirects=False, headers={"Accept": "application/json"})

    def current_status(self) -> Any:
        """The decoded JSON document (its shape is the parser's business). Raises CollectorError."""
        try:
            resp = self._http.get(self.url)
        except httpx.TimeoutException:
            raise CollectorError(f"Heroku status API: no answer within {self.timeout.total_seconds():g}s") from None
        except httpx.TransportError as exc:
            raise CollectorError(f"Heroku status API unreachable: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise CollectorError(f"Heroku status API answered HTTP {resp.status_code}")
        try:
            return resp.json()
        except ValueError:
            raise CollectorError("Heroku status API: the answer is not JSON") from None

    def close(self) -> None:
        self._http.close()
