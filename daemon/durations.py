"""Human durations for configuration: "90s", "5m", "1h30m", "24h", "7d", or plain seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> object:
    """Turn "1h30m" or 5400 into a timedelta; leave anything else to pydantic's own parsing.

    Raises ValueError with a readable message for a malformed or negative string.
    """
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    if text.startswith("-"):
        raise ValueError("must not be negative")
    pos, seconds = 0, 0.0
    for m in _PART.finditer(text):
        if text[pos : m.start()].strip():
            break
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or text[pos:].strip():
        if text.startswith("p"):  # ISO 8601 (P1D, PT5M): pydantic understands it
            return value
        raise ValueError("not a duration (examples: 30s, 5m, 1h30m, 24h, 7d)")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    """The shortest human form of a duration: 86400s -> "1d", 129600s -> "36h", 5400s -> "1h30m", -90s -> "-1m30s"."""
    total = int(td.total_seconds())
    if total == 0:
        return "0s"
    sign, total = ("-" if total < 0 else ""), abs(total)
    out = [sign]
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if unit == "d" and total % 86400:
            continue  # prefer "36h" over "1d12h"
        n, total = divmod(total, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
