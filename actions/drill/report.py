"""Drill reports: JSON for machines, Markdown for people, both in `<state_dir>/drills/<database>/` (and in the
archive bucket when it is S3). The monthly checklist of the SuoOps backup and recovery procedures maps to
report lines: each item says which check covered it, or that none did (configure one)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

from actions.drill.outcome import DrillRun
from daemon import __version__
from daemon.adapters.postgres.tools import tool_version

#: The "Test Checklist" of the SuoOps backup and recovery procedures and what in a drill answers each item.
SEED_CHECKLIST = [
    ("Backup downloads successfully", "download"),
    ("Restore completes without errors", "restore"),
    ("User authentication works", "users"),
    ("Invoice creation works", "invoices"),
    ("Payment status updates work", "payments"),
    ("PDF generation works", "pdf"),
    ("Email notifications work", "email"),
]


def _tool(name: str) -> str | None:
    try:
        return tool_version(name)
    except Exception:
        return None


def report_doc(run: DrillRun) -> dict[str, Any]:
    b = run.backup
    return {
        "database": run.database, "scenario": run.scenario, "started_at": run.started_at.isoformat(),
        "succeeded": run.succeeded, "reason": run.reason,
        "backup": None if b is None else {
            "id": b.backup_id, "source": run.source, "recovery_point": b.recovery_point.isoformat(),
            "size_bytes": b.size_bytes, "sha256": b.sha256, "kind": b.kind,
        },
        "dump_bytes": run.dump_bytes,
        "phases_seconds": {k: round(v, 3) for k, v in run.phases.items()},
        "recovery_seconds": round(run.recovery_seconds, 3),
        "rto_seconds": run.rto_seconds,
        "within_rto": None if run.rto_seconds is None or not run.succeeded
        else run.recovery_seconds <= run.rto_seconds,
        "checks": [c.to_json() for c in run.checks],
        "checklist": checklist(run),
        "toc": run.toc.to_json() if run.toc else None,
        "scratch_database": run.scratch, "safety": run.safety, "notes": run.notes,
        "tools": {"pg_restore": _tool("pg_restore"), "guardian": __version__},
        "host": socket.gethostname(),
    }


def checklist(run: DrillRun) -> list[dict[str, Any]]:
    out = []
    for item, key in SEED_CHECKLIST:
        if key in ("download", "restore"):
            done = key in run.phases and (key != "restore" or bool(run.checks) or run.succeeded)
            out.append({"item": item, "status": "passed" if done else "failed",
                        "by": f"the drill's {key} phase"})
            continue
        related = [c for c in run.checks if key in c.name.lower()]
        if not related:
            out.append({"item": item, "status": "not covered",
                        "by": f"configure a drill check whose name mentions {key!r} (SQL or HTTP)"})
        else:
            ok = all(c.ok for c in related)
            out.append({"item": item, "status": "passed" if ok else "failed",
                        "by": ", ".join(c.name for c in related)})
    return out


def markdown(doc: dict[str, Any]) -> str:
    b = doc["backup"] or {}
    verdict = "SUCCEEDED" if doc["succeeded"] else "FAILED"
    lines = [
        f"# Restore drill: {doc['database']} ({doc['scenario']}) {verdict}", "",
        f"- Started: {doc['started_at']} on {doc['host']}",
        f"- Result: {doc['reason']}",
        f"- Backup: {b.get('id', '-')} from {b.get('source', '-')}, recovery point {b.get('recovery_point', '-')}, "
        f"{doc['dump_bytes']} bytes",
        f"- Recovery time: {doc['recovery_seconds']:.1f} s against an RTO of "
        f"{(doc['rto_seconds'] or 0):.0f} s" + ("" if doc["within_rto"] is None else
                                              (" (within)" if doc["within_rto"] else " (OVER THE RTO)")),
        f"- Safety: {doc['safety'] or '-'}; scratch database {doc['scratch_database'] or '-'} (dropped)",
        "", "## Phases", "", "| phase | seconds |", "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in doc["phases_seconds"].items()],
        "", "## Checks", "", "| check | result | detail |", "|---|---|---|",
        *[f"| {_cell(c['name'])} | {'ok' if c['ok'] else 'FAILED'} | {_cell(c['detail'])} |" for c in doc["checks"]],
        "", "## The procedure's checklist", "", "| item | status | covered by |", "|---|---|---|",
        *[f"| {c['item']} | {c['status']} | {_cell(c['by'])} |" for c in doc["checklist"]],
    ]
    if doc["notes"]:
        lines += ["", "## Notes", "", *[f"- {n}" for n in doc["notes"]]]
    lines += ["", f"Tools: {doc['tools']['pg_restore']}, pg-backup-guardian {doc['tools']['guardian']}", ""]
    return "\n".join(lines)


def write_report(run: DrillRun, state_dir: Path) -> tuple[Path, dict[str, Any], str]:
    """Write the JSON and Markdown report; returns (json path, document, markdown)."""
    doc = report_doc(run)
    text = markdown(doc)
    folder = state_dir / "drills" / quote(run.database, safe="")
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{run.started_at:%Y%m%dT%H%M%SZ}-{run.scenario}"
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    path.with_suffix(".md").write_text(text)
    return path, doc, text


def load_latest(state_dir: Path, database: str) -> list[dict[str, Any]]:
    """The newest report per scenario for `database` (so metrics survive a restart)."""
    folder = state_dir / "drills" / quote(database, safe="")
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("scenario"):
            doc["_path"] = str(path)
            prev = latest.get(doc["scenario"])
            if prev is None or doc["started_at"] >= prev["started_at"]:
                latest[doc["scenario"]] = doc
            last_good = latest.get(f"{doc['scenario']}:good")
            if doc.get("succeeded") and (last_good is None or doc["started_at"] >= last_good["started_at"]):
                latest[f"{doc['scenario']}:good"] = doc
    return list(latest.values())


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a `|` in a check or table name must not end the cell."""
    return str(text).replace("|", "\\|")
