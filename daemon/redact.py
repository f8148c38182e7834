"""Keep secrets out of logs, metrics, status documents and error messages.

Two tools: `redact_url` masks the password of one connection URL, and `Redactor` scrubs a set of known
secret strings (passwords, tokens, DSNs) from any text. The logging sink runs every record through the
process-wide redactor, so a secret that slips into an exception message is still masked.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import Any
from urllib.parse import unquote

MASK = "***"
# scheme://user:password@host  -> scheme://user:***@host   (works for postgres, https, s3 URLs)
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
# key=value conninfo form: password=secret
_CONNINFO_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Return `text` with the password of every URL or conninfo in it replaced by `***`."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + m.group("tail"), text)
    return _CONNINFO_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def url_password(url: str) -> str | None:
    """The password embedded in a URL, decoded, or None."""
    m = _URL_PASSWORD.search(url)
    if not m or not m.group("pw"):
        return None
    return unquote(m.group("pw"))


class Redactor:
    """A registry of secret strings to mask wherever they appear. Thread-safe."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        """Register a secret; short strings (< 4 chars) are ignored to avoid masking ordinary words."""
        if secret and len(secret) >= 4:
            with self._lock:
                self._secrets.add(secret)

    def add_url(self, url: str | None) -> None:
        """Register the password inside a URL (raw and percent-decoded)."""
        if not url:
            return
        m = _URL_PASSWORD.search(url)
        if m and m.group("pw"):
            self.add(m.group("pw"))
            self.add(unquote(m.group("pw")))

    def __call__(self, text: str) -> str:
        # Registered secrets first: a password holding a raw "@" would otherwise be cut by the URL pattern.
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return redact_url(text)


#: The process-wide redactor used by logging and every user-facing message.
REDACTOR = Redactor()


def redact_tree(value: Any) -> Any:
    """A JSON-like value with every string masked (events, breadcrumbs, audit details); datetimes become ISO
    text and tuples lists, so the result is ready for JSON."""
    if isinstance(value, str):
        return REDACTOR(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return value
