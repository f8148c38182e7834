"""Keep secrets out of logs, metrics, status documents and error messages.

Two tools: `redact_url` masks the password of one connection URL, and `Redactor` scrubs a set of known
secret strings (passwords, tokens, DSNs) from any text. The logging sink runs every record through the
process-wide redactor, so a secret that slips into an exception message is still masked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import unquote

MASK = "***"

# Both scans below run in time linear in the text: each runs on every log line, and a regular expression that
# retries a long run of letters from every start position (the obvious `scheme://user:pw@` pattern) takes
# seconds on 100 KB and minutes on 1 MB, stalling the daemon on one long error message.

# scheme://user:  -- the part of a URL before its password. The look-behind lets a match start only where a run
# of scheme characters starts, so a long run of letters is read once, not once per letter; the user part holds
# no "/", so the user parts of two candidates never overlap.
_URL_HEAD = re.compile(r"(?<![a-zA-Z0-9+.-])[0-9+.-]*[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:")
# The password runs from the head to the first "@"; a whitespace first means there is no password here.
_URL_PASSWORD_END = re.compile(r"[@\s]")
# key=value conninfo form: password=secret, password = 'quoted \' secret'. Linear as it stands: a quoted value that
# never closes cannot run past another value's opening quote (that quote would close it), so no two scans overlap;
# the possessive repeats only spare the engine the backtracking that could never find an earlier closing quote.
_CONNINFO_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]++|\\.)*+'|\S+)", re.IGNORECASE)


def _url_password_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of the password of each `scheme://user:password@` in `text`, left to right, not overlapping.

    Linear time: a password scan that meets whitespace (or the end) before any "@" proves that no URL starting
    before that point has a password either (their scans would end at the same place), so the search resumes
    after it; a scan that meets "@" is a match, and the search resumes after the "@".
    """
    pos = 0
    while (head := _URL_HEAD.search(text, pos)) is not None:
        end = _URL_PASSWORD_END.search(text, head.end())
        if end is None:
            return
        if end.group() == "@":
            yield head.end(), end.start()
        pos = end.end()


def _mask_spans(text: str, spans: Iterator[tuple[int, int]]) -> str:
    """`text` with each (start, end) span, in order and not overlapping, replaced by the mask."""
    out: list[str] = []
    last = 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(MASK)
        last = end
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def redact_url(text: str) -> str:
    """Return `text` with the password of every URL or conninfo in it replaced by `***`. Linear in len(text)."""
    text = _mask_spans(text, _url_password_spans(text))
    return _CONNINFO_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def url_password(url: str) -> str | None:
    """The password embedded in a URL, decoded, or None."""
    span = next(_url_password_spans(url), None)
    if span is None or span[0] == span[1]:
        return None
    return unquote(url[span[0] : span[1]])


def shorten(text: str, limit: int = 80) -> str:
    """`text` itself when it has at most `limit` characters; otherwise its start, an ellipsis and how long the
    whole was, so a huge value echoed in an error stays one short line (never more than `limit` + 40 chars)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters in all)"


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
        span = next(_url_password_spans(url), None)
        if span is not None and span[0] < span[1]:
            self.add(url[span[0] : span[1]])
            self.add(unquote(url[span[0] : span[1]]))

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
