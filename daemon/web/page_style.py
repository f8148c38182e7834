"""The status page's stylesheet, inline (no external resource): cards that wrap, readable from 390 px phones to
wide screens without horizontal scrolling; colours always paired with words (a badge says its status)."""

from __future__ import annotations

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330;background:#f3f5f8}
a{color:#1756a9}
.top{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline;padding:10px 16px;background:#1d2330;color:#dde3ee}
.top a{color:#fff;font-weight:600;text-decoration:none}
.top .gen{margin-left:auto;font-size:13px;color:#aab4c5}
main{max-width:1280px;margin:0 auto;padding:12px 16px 24px}
footer{text-align:center;padding:8px 0 20px;font-size:13px}
.verdict{font-size:22px;line-height:1.3;margin:8px 0 16px;padding:14px 16px;border-radius:8px;color:#fff;
  overflow-wrap:anywhere}
.verdict.s-ok{background:#2e7d32}.verdict.s-warning{background:#b26a00}
.verdict.s-critical,.verdict.s-unknown{background:#b71c1c}
.notice{margin:0 0 10px;padding:8px 12px;border-radius:6px;background:#e8eefb;border-left:4px solid #1756a9;
  overflow-wrap:anywhere}
.notice.s-warning{background:#fff4e0;border-color:#b26a00}.notice.s-critical{background:#fdecea;border-color:#b71c1c}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,380px),1fr));gap:16px}
.card{background:#fff;border-radius:8px;padding:14px 16px;box-shadow:0 1px 3px rgba(0,0,0,.12);
  border-top:6px solid #9e9e9e;min-width:0;overflow-wrap:anywhere}
.card.s-ok{border-top-color:#2e7d32}.card.s-warning{border-top-color:#e09200}
.card.s-critical{border-top-color:#b71c1c}.card.s-unknown{border-top-color:#6d4c9f}
.card>header{display:flex;flex-wrap:wrap;gap:6px 10px;align-items:center;justify-content:space-between}
.card h2{font-size:18px;margin:0;overflow-wrap:anywhere}
.badge{display:inline-block;padding:3px 10px;border-radius:999px;font-size:13px;font-weight:700;color:#fff}
.badge.s-ok{background:#2e7d32}.badge.s-warning{background:#b26a00}.badge.s-critical{background:#b71c1c}
.badge.s-unknown{background:#6d4c9f}
.risk{margin:12px 0 6px}
.bar{height:12px;background:#e4e7ec;border-radius:6px;overflow:hidden}
.fill{display:block;height:100%}
.fill.s-ok{background:#2e7d32}.fill.s-warning{background:#e09200}.fill.s-critical{background:#c62828}
.risk-text{margin:4px 0 0;font-weight:600}
dl{margin:8px 0}
dl>div{display:grid;grid-template-columns:minmax(0,11em) minmax(0,1fr);gap:8px;padding:4px 0;
  border-bottom:1px solid #eef0f3}
dt{color:#5a6372}dd{margin:0;min-width:0}
.muted{color:#6b7380;font-size:13px}
ul.plain{list-style:none;margin:0;padding:0}
.s-text-ok{color:#1b5e20}.s-text-muted{color:#6b7380}.s-text-warning{color:#8a5200}.s-text-critical{color:#b71c1c}
.timeline{margin:10px 0 6px}
.timeline figcaption{font-size:13px;color:#5a6372;margin-bottom:2px}
.timeline svg{display:block;width:100%;height:18px}
.axis{display:flex;justify-content:space-between;font-size:11px;color:#6b7380}
.findings{list-style:none;padding:0;margin:10px 0 0}
.finding{padding:8px 10px;margin-top:8px;border-radius:6px;background:#fff8e6;border-left:4px solid #e09200}
.finding.s-critical{background:#fdecea;border-left-color:#b71c1c}
.finding .sev{text-transform:uppercase;font-size:11px;font-weight:700;letter-spacing:.04em}
.finding p{margin:4px 0 0}
.runbook{white-space:nowrap;margin-left:6px}
.none-active{color:#1b5e20;margin:10px 0 0}
.back{margin:4px 0 12px}
.section{font-size:18px;margin:22px 0 8px}
table.history{width:100%;border-collapse:collapse;background:#fff;border-radius:8px;overflow:hidden;
  box-shadow:0 1px 3px rgba(0,0,0,.12)}
.history th,.history td{text-align:left;vertical-align:top;padding:6px 8px;border-bottom:1px solid #eef0f3}
.history th{background:#e9edf3;font-size:13px}
.history td{overflow-wrap:anywhere}
.history td:not(:last-child){white-space:nowrap;overflow-wrap:normal}  /* only the error may wrap */
pre.error{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;font:12px/1.4 ui-monospace,monospace;color:#8b1a1a}
@media (max-width:640px){
  .verdict{font-size:19px}
  .history thead{display:none}
  table.history,.history tbody,.history tr,.history td{display:block;width:100%}
  .history tr{border-bottom:2px solid #d5dae2;padding:4px 0}
  .history td,.history td:not(:last-child){border:0;padding:2px 10px;display:grid;
    grid-template-columns:6.5em minmax(0,1fr);gap:6px;white-space:normal;overflow-wrap:anywhere}
  .history td::before{content:attr(data-label);color:#5a6372}
  .history td:empty{display:none}
}
"""
