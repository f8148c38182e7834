"""The Heroku API token's lifetime, read rarely (it changes only when someone replaces the token).

One request (`GET /oauth/authorizations`) a day out of the account's 4,500 an hour is below any pacing the fleet
planner does, so the reading is its own job rather than a share of the collection budget.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from loguru import logger

from daemon.adapters.heroku import HerokuAuthError, HerokuError
from daemon.core.policy.token import TokenLifetime, token_lifetime

READ_EVERY = timedelta(hours=24)


class TokenReader(Protocol):
    def token_authorization(self) -> dict[str, object] | None: ...


class TokenWatch:
    """Holds the last reading of the token's lifetime; `read()` refreshes it and never raises."""

    def __init__(self, api: TokenReader, clock: Callable[[], datetime]) -> None:
        self.api = api
        self.clock = clock
        self.lifetime: TokenLifetime | None = None

    def read(self) -> TokenLifetime | None:
        """Read the authorization of the token in use. A refusal (403: the token may not list authorizations)
        makes the lifetime unknown, which is no error; any other failure keeps the previous reading (a day old
        at worst) and is retried at the next run."""
        now = self.clock()
        try:
            self.lifetime = token_lifetime(self.api.token_authorization(), now)
        except HerokuAuthError as exc:
            self.lifetime = TokenLifetime(False, None, f"the token may not read its authorization ({exc})", now)
        except HerokuError as exc:
            logger.warning("the Heroku API token's lifetime was not read: {}", exc)
        return self.lifetime
