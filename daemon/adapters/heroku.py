"""Heroku Platform API and Data API client (../shared/reference/heroku-api.md).

`HerokuAPI` is the contract the collectors and actions use; `HerokuClient` is the one real adapter (httpx).
Behaviour, with the reference section it follows:
  - `Authorization: Bearer <HEROKU_API_KEY>` on both hosts; `Accept: application/vnd.heroku+json; version=3`,
    `version=3.sdk` plus `Accept-Inclusion` for attachment resolution (section 0, 4);
  - `Range`/`Next-Range` pagination: 206 means more pages (3.4);
  - a timeout on every call; retries with exponential backoff on 5xx and connection errors only;
  - 429: wait for the bucket to refill (~75 tokens/min; no Retry-After is promised, 3.3), bounded;
  - `RateLimit-Remaining` kept in `ratelimit_remaining`;
  - error bodies `{id, message}` become `HerokuError` subclasses that keep Heroku's message.
The token is registered with the redactor and never appears in a message.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from loguru import logger

from daemon import __version__
from daemon.core.errors import GuardianError
from daemon.core.redact import REDACTOR

if TYPE_CHECKING:
    from daemon.config import HerokuConfig

ACCEPT_V3 = "application/vnd.heroku+json; version=3"
ACCEPT_SDK = "application/vnd.heroku+json; version=3.sdk"
DATA_PREFIX = "/client/v11"
ADVANCED_PREFIX = "/data/postgres/v1"  # Advanced-tier databases (heroku/cli data:pg:*)
REFILL_PER_MINUTE = 75.0
MAX_PAGES = 50


class HerokuError(GuardianError):
    """A Heroku API call failed. `status` is the HTTP status (0 for transport errors), `error_id` Heroku's id."""

    def __init__(self, message: str, status: int = 0, error_id: str | None = None) -> None:
        super().__init__(REDACTOR(message))
        self.status = status
        self.error_id = error_id


class HerokuAuthError(HerokuError):
    """401/403: the token is missing, wrong, or lacks the scope."""


class HerokuNotFound(HerokuError):
    """404: unknown app, add-on, attachment or transfer."""


class HerokuGone(HerokuError):
    """410: the transfer was deleted (expired by Heroku's retention, or removed): it existed and no longer does.
    Not an error of the caller, nor a failed backup; whoever wanted it moves on to the next good one."""


class HerokuRateLimited(HerokuError):
    """429 that did not clear within the allowed wait."""


class HerokuUnavailable(HerokuError):
    """5xx or connection failures that outlasted the retries."""


class HerokuProtocolError(HerokuError):
    """A response that is not the JSON the API promises (malformed, wrong shape)."""


@dataclass(frozen=True)
class ResolvedDatabase:
    """What the CLI uses after resolving `app` + attachment (reference section 4, step 7)."""

    app: str
    attachment: str
    addon_id: str
    addon_name: str
    billing_app: str
    plan: str


class HerokuAPI(Protocol):
    """The Heroku calls the guardian makes. Every method raises a `HerokuError` subclass on failure."""

    ratelimit_remaining: int | None
    requests_total: int

    def resolve_database(self, app: str, attachment: str = "DATABASE") -> ResolvedDatabase: ...

    def attachment_names(self, app: str, addon_id: str) -> set[str]: ...

    def list_transfers(self, app: str) -> list[dict[str, Any]]: ...

    def transfer_info(self, app: str, transfer: str | int, verbose: bool = False) -> dict[str, Any]: ...

    def list_schedules(self, addon_id: str) -> list[dict[str, Any]]: ...

    def database_info(self, addon_id: str) -> dict[str, Any]: ...

    def advanced_info(self, addon_id: str) -> dict[str, Any]: ...

    def capture(self, addon_id: str) -> dict[str, Any]: ...

    def public_url(self, app: str, num: int) -> dict[str, Any]: ...

    def refresh_ratelimit(self) -> int | None: ...

    def formation(self, app: str, process_type: str) -> dict[str, Any]:
        """The formation object of one process type (reference 3.2); `HerokuNotFound` for an unknown type."""
        ...

    def token_authorization(self) -> dict[str, Any] | None:
        """The OAuth authorization of the token in use without its secrets, None when none lists it;
        `HerokuAuthError` when the token may not list authorizations."""
        ...

    def update_formation(self, app: str, process_type: str, quantity: int) -> dict[str, Any]:
        """Set the absolute dyno `quantity` of one process type; returns the updated formation object."""
        ...

    def releases(self, app: str, limit: int = 10) -> list[dict[str, Any]]:
        """The app's newest `limit` release objects (reference 3.2), newest first."""
        ...

    def rollback(self, app: str, release_id: str) -> dict[str, Any]:
        """Roll `app` back to the release `release_id`; returns the new release Heroku created for it."""
        ...


class HerokuClient:
    """httpx-based `HerokuAPI`. Thread-safe; `sleep` and `clock` are injectable for tests."""

    def __init__(
        self,
        token: str,
        *,
        platform_url: str = "https://api.heroku.com",
        data_url: str = "https://api.data.heroku.com",
        timeout: float = 15.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_rate_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise HerokuAuthError("no Heroku API token: set HEROKU_API_KEY (read-only scope is enough to watch)")
        REDACTOR.add(token)
        self._token = token
        self.platform_url = platform_url.rstrip("/")
        self.data_url = data_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_rate_wait = max_rate_wait
        self.sleep = sleep
        self.ratelimit_remaining: int | None = None
        self.requests_total = 0
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=httpx.Timeout(timeout), transport=transport, follow_redirects=False,
                                  headers={"User-Agent": f"pg-backup-guardian/{__version__}"})

    def close(self) -> None:
        self._http.close()

    # -- the API ------------------------------------------------------------------------------------------
    def resolve_database(self, app: str, attachment: str = "DATABASE") -> ResolvedDatabase:
        """Resolve `app` + attachment the way the CLI does: POST /actions/addon-attachments/resolve, keep the
        heroku-postgresql ones, singularize; on 404 fall back to the app's attachments + config vars."""
        if "::" in attachment:
            app, attachment = attachment.split("::", 1)
        name = attachment.removesuffix("_URL")
        headers = {"Accept-Inclusion": "addon:plan,config_vars"}
        try:
            found = self._call("POST", "platform", "/actions/addon-attachments/resolve",
                               body={"addon_attachment": attachment, "app": app}, accept=ACCEPT_SDK, headers=headers)
            matches = [a for a in _as_list(found, "attachment resolution") if _is_postgres(a)]
        except HerokuNotFound:
            matches = self._resolve_fallback(app, name, headers)
        if not matches:
            raise HerokuNotFound(f"Unknown database: {attachment} on app {app}", 404, "not_found")
        if len(matches) > 1:
            plain = [a for a in matches if not a.get("namespace")]
            matches = plain or matches
        if len({(a.get("addon") or {}).get("id") for a in matches}) > 1:
            names = ", ".join(sorted(str(a.get("name")) for a in matches))
            raise HerokuError(f"Ambiguous database {attachment} on app {app}: {names}", 422, "multiple_matches")
        att = matches[0]
        addon = att.get("addon") or {}
        try:
            return ResolvedDatabase(
                app=app, attachment=str(att.get("name") or name), addon_id=str(addon["id"]),
                addon_name=str(addon.get("name") or ""),
                billing_app=str(((addon.get("app") or {}).get("name")) or app),
                plan=str((addon.get("plan") or {}).get("name") or ""),
            )
        except KeyError:
            raise HerokuProtocolError(f"attachment {name} of {app} has no add-on id") from None

    def _resolve_fallback(self, app: str, name: str, headers: dict[str, str]) -> list[dict[str, Any]]:
        """Reference section 4 step 5: list attachments, match by config var value."""
        attachments = [a for a in _as_list(self._call("GET", "platform", f"/apps/{app}/addon-attachments",
                                                      accept=ACCEPT_SDK, headers=headers, paginate=True),
                                           "attachments") if _is_postgres(a)]
        config = self._call("GET", "platform", f"/apps/{app}/config-vars")
        if not isinstance(config, dict):
            raise HerokuProtocolError(f"config vars of {app} are not an object")
        wanted = config.get(f"{name}_URL")
        out = []
        for a in attachments:
            vars_ = [v for v in (a.get("config_vars") or []) if str(v).endswith("_URL")]
            if wanted and vars_ and config.get(vars_[0]) == wanted:
                out.append(a)
        return out

    def attachment_names(self, app: str, addon_id: str) -> set[str]:
        """Names under which `addon_id` is attached to `app` (transfers carry them as `from_name`)."""
        found = self._call("GET", "platform", f"/apps/{app}/addon-attachments", accept=ACCEPT_SDK,
                           headers={"Accept-Inclusion": "addon:plan,config_vars"}, paginate=True)
        return {str(a.get("name")) for a in _as_list(found, "attachments")
                if (a.get("addon") or {}).get("id") == addon_id and a.get("name")}

    def list_transfers(self, app: str) -> list[dict[str, Any]]:
        return _as_list(self._call("GET", "data", f"{DATA_PREFIX}/apps/{app}/transfers", paginate=True), "transfers")

    def transfer_info(self, app: str, transfer: str | int, verbose: bool = False) -> dict[str, Any]:
        query = "?verbose=true" if verbose else ""
        return _as_dict(self._call("GET", "data", f"{DATA_PREFIX}/apps/{app}/transfers/{transfer}{query}"),
                        "transfer")

    def list_schedules(self, addon_id: str) -> list[dict[str, Any]]:
        return _as_list(self._call("GET", "data", f"{DATA_PREFIX}/databases/{addon_id}/transfer-schedules",
                                   paginate=True), "schedules")

    def database_info(self, addon_id: str) -> dict[str, Any]:
        return _as_dict(self._call("GET", "data", f"{DATA_PREFIX}/databases/{addon_id}"), "database info")

    def advanced_info(self, addon_id: str) -> dict[str, Any]:
        """An Advanced-tier database's info (`data:pg:info`): `features.rollback` {enabled, earliest_time,
        latest_time}, `features.continuous_protection.enabled`, on the data host without the /client/v11 prefix
        (heroku/cli src/commands/data/pg/info.ts, src/lib/data/types.ts `InfoResponse`)."""
        return _as_dict(self._call("GET", "data", f"{ADVANCED_PREFIX}/{addon_id}/info"), "Advanced database info")

    def capture(self, addon_id: str) -> dict[str, Any]:
        """Start a capture. Not retried after the request may have reached Heroku: a duplicate manual capture
        would expire the oldest manual backup at the plan's limit (reference 5.3)."""
        return _as_dict(self._call("POST", "data", f"{DATA_PREFIX}/databases/{addon_id}/backups",
                                   idempotent=False), "transfer")

    def public_url(self, app: str, num: int) -> dict[str, Any]:
        return _as_dict(self._call("POST", "data", f"{DATA_PREFIX}/apps/{app}/transfers/{num}/actions/public-url"),
                        "public url")

    def refresh_ratelimit(self) -> int | None:
        """Read the account's remaining tokens (`GET /account/rate-limits`, which does not count)."""
        doc = self._call("GET", "platform", "/account/rate-limits")
        if isinstance(doc, dict) and isinstance(doc.get("remaining"), int):
            self.ratelimit_remaining = int(doc["remaining"])
        return self.ratelimit_remaining

    def token_authorization(self) -> dict[str, Any] | None:
        """The OAuth authorization of the token in use, or None when no authorization lists it
        (`GET /oauth/authorizations`, matched on `access_token.token` as the CLI's `auth:token` does; see
        HEROKU_DOUBLE.md, API tokens). `HerokuAuthError` (403) for a token without the scope to list them. The
        answer holds the token itself: only the matched authorization leaves, and callers keep no token."""
        doc = self._call("GET", "platform", "/oauth/authorizations")
        if not isinstance(doc, list):
            raise HerokuProtocolError("oauth authorizations: expected a list")
        for item in doc:
            access = item.get("access_token") if isinstance(item, dict) else None
            if isinstance(access, dict) and isinstance(access.get("token"), str) \
                    and hmac.compare_digest(access["token"], self._token):
                return {k: v for k, v in item.items() if k not in ("access_token", "refresh_token")} | {
                    "access_token": {"id": access.get("id"), "expires_in": access.get("expires_in")}}
        return None

    def formation(self, app: str, process_type: str) -> dict[str, Any]:
        """`GET /apps/{app}/formation/{type}` (reference 3.1). The object carries an int `quantity`, else
        `HerokuProtocolError`."""
        doc = _as_dict(self._call("GET", "platform", f"/apps/{app}/formation/{process_type}"), "formation")
        if not isinstance(doc.get("quantity"), int) or isinstance(doc.get("quantity"), bool):
            raise HerokuProtocolError(f"formation {process_type} of {app}: no integer quantity")
        return doc

    def update_formation(self, app: str, process_type: str, quantity: int) -> dict[str, Any]:
        """`PATCH /apps/{app}/formation/{type}` with `{"quantity": n}` (reference 3.1). The quantity is absolute,
        not the CLI's relative "+1", so sending it twice is harmless and the call is retried like a read.
        Returns the updated formation; one without an int `quantity` is a `HerokuProtocolError`."""
        doc = _as_dict(self._call("PATCH", "platform", f"/apps/{app}/formation/{process_type}",
                                  body={"quantity": quantity}, idempotent=True), "formation")
        if not isinstance(doc.get("quantity"), int) or isinstance(doc.get("quantity"), bool):
            raise HerokuProtocolError(f"formation {process_type} of {app}: the update answered no integer quantity")
        return doc

    def releases(self, app: str, limit: int = 10) -> list[dict[str, Any]]:
        """`GET /apps/{app}/releases` with `Range: version ..; max=N, order=desc` and the `version=3.sdk` accept,
        as the CLI's releases command sends them (reference 3.1, 3.4): one page, newest first."""
        data = self._call("GET", "platform", f"/apps/{app}/releases", accept=ACCEPT_SDK,
                          headers={"Range": f"version ..; max={limit}, order=desc"})
        return _as_list(data, "releases")

    def rollback(self, app: str, release_id: str) -> dict[str, Any]:
        """`POST /apps/{app}/releases` with `{"release": id}` (reference 3.1, the CLI's rollback): Heroku
        creates a new release copying the target. Not retried: a second POST would create a second release."""
        return _as_dict(self._call("POST", "platform", f"/apps/{app}/releases", body={"release": release_id},
                                   accept=ACCEPT_SDK, idempotent=False), "release")

    # -- transport ----------------------------------------------------------------------------------------
    def _call(self, method: str, host: str, path: str, *, body: Any = None, accept: str = ACCEPT_V3,
              headers: dict[str, str] | None = None, paginate: bool = False, idempotent: bool = True) -> Any:
        base = self.platform_url if host == "platform" else self.data_url
        hdrs = {"Accept": accept, "Authorization": f"Bearer {self._token}", **(headers or {})}
        result: list[Any] = []
        for _ in range(MAX_PAGES):
            resp = self._send(method, base + path, hdrs, body, idempotent)
            data = _decode(resp, method, path)
            if not paginate or resp.status_code != 206:
                return result + data if paginate and isinstance(data, list) else data
            if not isinstance(data, list):
                raise HerokuProtocolError(f"{method} {path}: a partial page that is not a list")
            result += data
            next_range = resp.headers.get("Next-Range")
            if not next_range:
                return result
            hdrs["Range"] = next_range
        logger.warning("heroku: {} {} stopped after {} pages", method, path, MAX_PAGES)
        return result

    def _send(self, method: str, url: str, headers: dict[str, str], body: Any,
              idempotent: bool = True) -> httpx.Response:
        """One call with its retries: transport errors and 5xx with backoff (a non-idempotent call only when
        the request never left: a connect error), 429 by waiting for the bucket up to `max_rate_wait`."""
        attempt, rate_waited = 0, 0.0
        while True:
            headers["Request-Id"] = str(uuid.uuid4())
            with self._lock:
                self.requests_total += 1
            try:
                resp = self._http.request(method, url, headers=headers,
                                          content=None if body is None else json.dumps(body).encode(),
                                          extensions=None)
            except httpx.TransportError as exc:
                if attempt >= self.retries or (not idempotent and not isinstance(exc, httpx.ConnectError)):
                    raise HerokuUnavailable(f"{method} {_path(url)}: {type(exc).__name__} after "
                                            f"{attempt + 1} attempts: {exc}") from None
                self.sleep(self.backoff * 2**attempt)
                attempt += 1
                continue
            remaining = resp.headers.get("RateLimit-Remaining")
            if remaining is not None and remaining.strip().isdigit():
                self.ratelimit_remaining = int(remaining)
            if resp.status_code == 429:
                self.ratelimit_remaining = 0
                wait = 60.0 / REFILL_PER_MINUTE * 10  # ten tokens' worth of refill, then try again
                if rate_waited + wait > self.max_rate_wait:
                    raise HerokuRateLimited(f"{method} {_path(url)}: {_message(resp)} (waited {rate_waited:.0f}s)",
                                            429, "rate_limit")
                logger.info("heroku: rate limited; waiting {:.0f}s for the bucket to refill", wait)
                self.sleep(wait)
                rate_waited += wait
                continue
            if resp.status_code >= 500:
                if attempt >= self.retries or not idempotent:
                    raise HerokuUnavailable(f"{method} {_path(url)}: HTTP {resp.status_code} after "
                                            f"{attempt + 1} attempts: {_message(resp)}", resp.status_code)
                self.sleep(self.backoff * 2**attempt)
                attempt += 1
                continue
            if resp.status_code >= 400:
                raise _translate(resp, method, url)
            return resp


def _path(url: str) -> str:
    return httpx.URL(url).path


def _message(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except (ValueError, httpx.ResponseNotRead):
        return f"HTTP {resp.status_code}"
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    return f"HTTP {resp.status_code}"


def _translate(resp: httpx.Response, method: str, url: str) -> HerokuError:
    try:
        doc = resp.json()
    except ValueError:
        doc = {}
    error_id = doc.get("id") if isinstance(doc, dict) else None
    text = f"{method} {_path(url)}: {_message(resp)}" + (f" ({error_id})" if error_id else "")
    status = resp.status_code
    if status in (401, 403):
        return HerokuAuthError(text, status, error_id)
    if status == 404:
        return HerokuNotFound(text, status, error_id)
    if status == 410:
        return HerokuGone(text, status, error_id)
    return HerokuError(text, status, error_id)


def _decode(resp: httpx.Response, method: str, path: str) -> Any:
    if not resp.content.strip():
        return None
    try:
        return resp.json()
    except ValueError:
        raise HerokuProtocolError(f"{method} {path}: the response is not valid JSON "
                                  f"(HTTP {resp.status_code}, {len(resp.content)} bytes)", resp.status_code) from None


def _as_list(data: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise HerokuProtocolError(f"{what}: expected a list of objects, got {type(data).__name__}")
    return data


def _as_dict(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise HerokuProtocolError(f"{what}: expected an object, got {type(data).__name__}")
    return data


def _is_postgres(attachment: dict[str, Any]) -> bool:
    plan = str(((attachment.get("addon") or {}).get("plan") or {}).get("name") or "")
    return plan.split(":", 1)[0] == "heroku-postgresql"


def deleted_meanwhile(api: HerokuAPI, app: str, num: int) -> bool:
    """After the download of transfer `num` of `app` broke off: whether Heroku deleted it meanwhile (its info now
    answers 410 Gone: its retention expired it, or someone removed it, while it was read). False when it is still
    there or Heroku cannot say (the break is then the download's own failure)."""
    try:
        api.transfer_info(app, num)
    except HerokuGone:
        return True
    except HerokuError as exc:
        logger.info("could not ask Heroku whether transfer {} of {} still exists: {}", num, app, exc)
    return False


def client_for(cfg: HerokuConfig) -> HerokuClient:
    """The client as the daemon uses it. `max_rate_wait=0`: a 429 ends the poll at once and the fleet planner
    does the waiting, so a pass never sits in sleeps holding the collection lock."""
    token = cfg.api_key.get_secret_value() if cfg.api_key is not None else ""
    return HerokuClient(token, platform_url=cfg.platform_url, data_url=cfg.data_url,
                        timeout=cfg.timeout.total_seconds(), retries=cfg.retries, max_rate_wait=0)
