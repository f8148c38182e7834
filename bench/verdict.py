"""One verdict line for every benchmark: the figure as printed beside PASS or MISS computed from that figure."""

from __future__ import annotations


def judged(value: float, fmt: str, op: str, target: float, unit: str = "") -> str:
    """``<value> (target <op> <target>) PASS|MISS``: the value as printed (format `fmt`, then `unit`) and the
    verdict computed from that printed figure, so the two can never disagree (in rounding or in unit); the
    target is printed unrounded. `op` is ``<=`` or ``>=``; NaN (nothing measured) is a MISS."""
    shown = f"{value:{fmt}}"
    figure = float(shown.replace(",", ""))
    ok = figure <= target if op == "<=" else figure >= target
    return f"{shown}{unit} (target {op} {target:,g}{unit}) {'PASS' if ok else 'MISS'}"
