"""Human durations for configuration: "90s", "5m", "1h30m", "24h", "7d", or plain seconds."""

from __future__ import annotations

import math
import re
from datetime import timedelta

# One "<number><unit>" part, matched at a given position (never searched for), so parsing is linear in the text.
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: No setting needs more; far beyond it, adding the duration to today's date overflows datetime (year 9999).
MAX_DURATION = timedelta(days=36500)
#: A duration written out is short; a longer text is refused unread (and never echoed whole).
MAX_TEXT = 64


def parse_duration(value: object) -> object:
    """Turn "1h30m" or 5400 into a timedelta; leave anything else to pydantic's own parsing.

    Raises ValueError with a readable message for a malformed, negative, non-finite or too large value (more than
    MAX_DURATION, about 100 years), or a text longer than MAX_TEXT characters; never OverflowError.
    """
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        return _seconds(value)
    if not isinstance(value, str):
        return value
    if len(value) > MAX_TEXT:
        raise ValueError(f"not a duration: {len(value):,} characters long (a duration has at most {MAX_TEXT})")
    text = value.strip().lower()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return _seconds(float(text))
    if text.startswith("-"):
        raise ValueError("must not be negative")
    pos, seconds = 0, 0.0
    while (m := _PART.match(text, pos)) is not None:
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or text[pos:].strip():
        if text.startswith("p"):  # ISO 8601 (P1D, PT5M): pydantic understands it
            return value
        raise ValueError("not a duration (examples: 30s, 5m, 1h30m, 24h, 7d)")
    return _seconds(seconds)


def _seconds(seconds: float) -> timedelta:
    """A timedelta of `seconds`, or ValueError when it is not a finite number within MAX_DURATION either way."""
    if isinstance(seconds, float) and not math.isfinite(seconds):  # an int is finite, and may be too big for float
        raise ValueError("must be a finite number of seconds")
    if abs(seconds) > MAX_DURATION.total_seconds():
        raise ValueError(f"too large (at most {format_duration(MAX_DURATION)})")
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
