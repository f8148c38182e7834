"""Drift: every metric name and label the dashboards (dashboards/*.json) and alert rules (alerts/*.yml) use is
emitted by a real guardian.

The guardian runs in process with every source it has: a self-managed database on the test PostgreSQL (one real
pg_dump capture), a Heroku database on the Heroku double, an S3 archive on moto (one real mirror of the Heroku
backup), and one real restore drill into a scratch cluster of its own. Its exposition is parsed with
prometheus-client's parser; the queries are parsed with the small PromQL parser below (selectors, matchers,
aggregations with by/without, vector matching with on/ignoring/group_left/group_right, functions, subqueries),
which tracks the labels each sub-expression carries so a `by (x)` or `on (x)` over a metric without `x` fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actions.capture import Capturer, CaptureRequest
from daemon.adapters.heroku import HerokuClient
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.core.policy import CHECKS
from tests.doubles.heroku import HerokuDouble
from tests.doubles.s3 import MotoServer, s3_client
from tests.support import REPO, create_database, make_cluster

DASHBOARDS = REPO / "dashboards"
ALERTS = REPO / "alerts"
TOKEN = "hrku-drift-SECRET-0123456789"
APP = "suoops-backend"
HEROKU_DB = f"{APP}/DATABASE"
ADVANCED_APP = "suoops-advanced"
SELF_DB = "shop"
#: Labels Prometheus attaches to every scraped (or pushed) series.
TARGET_LABELS = frozenset({"job", "instance"})
METRIC = re.compile(r"pgbackup_[a-z0-9_]+")


# ---------------------------------------------------------------------------------------------------------------
# The real guardian and its scrape
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scrape:
    labels: dict[str, frozenset[str]]  # sample name -> label names
    families: frozenset[str]  # family names with at least one sample
    body: str


@pytest.fixture(scope="module")
def scrape(pg_cluster: LocalCluster, moto_server: MotoServer, sample_dump: Path) -> Iterator[Scrape]:
    base = Path(tempfile.mkdtemp(prefix="guardian-drift-", dir="/tmp"))
    base.chmod(0o755)
    scratch, scratch_base = make_cluster()
    bucket = f"drift-{datetime.now(UTC):%Y%m%d%H%M%S%f}"
    s3_client(moto_server.endpoint_url).create_bucket(Bucket=bucket)
    try:
        with HerokuDouble(token=TOKEN) as heroku:
            heroku.add_app(APP)
            heroku.add_app(ADVANCED_APP, plan="heroku-postgresql:advanced")  # the rollback window's latest point
            heroku.add_authorization(TOKEN, timedelta(days=200), "guardian")  # an expiry: its metric is emitted
            start = datetime.now(UTC) - timedelta(hours=3)
            heroku.add_schedule(APP, hour=start.hour)  # met by the backup below, at any time of day
            t = heroku.add_transfer(APP, created_at=start, started_at=start,
                                    finished_at=start + timedelta(minutes=4))
            heroku.set_dump_file(APP, t["num"], sample_dump)  # a restorable dump: unreadable copies are not good
            url = create_database(pg_cluster)
            config = GuardianConfig.model_validate({
                "state_dir": str(base / "state"),
                "heroku": {"api_key": TOKEN, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                           "status": {"url": heroku.status_url}, "apps": [APP, ADVANCED_APP]},
                "archive": {"kind": "s3", "s3": {
                    "bucket": bucket, "endpoint_url": moto_server.endpoint_url, "access_key_id": "testing",
                    "secret_access_key": "testing", "part_size_mb": 5, "timeout": "5s"}},
                "actions": {"dry_run": False, "scale": [{  # a probe that fails (no token): probe metrics
                    "name": "api", "url": f"{heroku.platform_url}/account/rate-limits", "app": APP}]},
                "databases": [{"name": SELF_DB, "url": url,
                               "drill": {"scratch_url": scratch.url("postgres"), "tables": ["invoices"]},
                               "compliance": {"tables": ["invoices"]}}],
            })
            g = Guardian(config, heroku_api=HerokuClient(TOKEN, platform_url=heroku.platform_url,
                                                         data_url=heroku.data_url))
            try:
                Capturer(g.store, g.processes).capture(CaptureRequest(database=SELF_DB, url=url))
                assert g.remedies.request_capture(SELF_DB, "drift check").outcome == "done"
                g.scaling.probe_all()
                assert g.token_watch is not None
                g.token_watch.read()
                g.collect_all(one_shot=True)
                assert g.mirrors.pending() == 1
                run = g.drills.drill(SELF_DB)
                assert run.succeeded, run.reason
                heroku.open_incident("Degraded Postgres performance")  # Heroku's status families and the rule
                assert g.provider_status is not None
                g.provider_status.poll()
                export = g.compliance.export(SELF_DB)
                assert export.ok, export.reason
                g.collect_all(one_shot=True)
                body = g.exposition.render()[0].decode()
            finally:
                g.stop()
    finally:
        scratch.destroy()
        shutil.rmtree(scratch_base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    labels: dict[str, set[str]] = {}
    families = set()
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            labels.setdefault(s.name, set()).update(s.labels)
            families.add(fam.name)
    yield Scrape({k: frozenset(v) for k, v in labels.items()}, frozenset(families), body)


def test_the_guardian_under_test_emits_every_metric_family_the_daemon_defines(scrape: Scrape) -> None:
    """Otherwise a dashboard could pass the drift check only because this setup missed a source."""
    source = (REPO / "daemon" / "metrics" / "families.py").read_text()
    defined = set(re.findall(r'"(pgbackup_[a-z0-9_]+)"', source))
    assert len(defined) > 40
    missing = sorted(defined - scrape.families)
    assert not missing, f"families without a sample in the drift guardian: {missing}\n{scrape.body}"
    assert {"pgbackup_actions_total", "pgbackup_collector_errors_total", "pgbackup_heroku_requests_total"} <= set(
        scrape.labels)
    assert 'phase="restore"' in scrape.body and f'database="{HEROKU_DB}"' in scrape.body


# ---------------------------------------------------------------------------------------------------------------
# A small PromQL parser
# ---------------------------------------------------------------------------------------------------------------
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile", "limitk", "limit_ratio"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
            "atan2"}
PRECEDENCE = {"or": 1, "and": 2, "unless": 2, "==": 3, "!=": 3, "<=": 3, ">=": 3, "<": 3, ">": 3, "+": 4, "-": 4,
              "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6}
COMPARISONS = {"==", "!=", "<=", ">=", "<", ">"}
SET_OPS = {"and", "or", "unless"}
SCALAR_FUNCTIONS = {"time", "scalar", "pi"}
TOKEN_RE = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<num>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)?(?:\d+(?:ms|s|m|h|d|w|y))*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|==|!=|<=|>=|[-+*/%^<>=,(){}\[\]@:])
""", re.VERBOSE)


@dataclass
class Selector:
    name: str | None
    matchers: list[tuple[str, str, str]]


@dataclass
class Aggregate:
    op: str
    args: list[Any]
    grouping: list[str] | None = None  # None: no clause
    without: bool = False


@dataclass
class Call:
    fn: str
    args: list[Any]


@dataclass
class Binary:
    op: str
    lhs: Any
    rhs: Any
    matching: list[str] | None = None  # on (...) / ignoring (...)
    ignoring: bool = False
    group: str | None = None  # "left" / "right"
    include: list[str] = field(default_factory=list)


@dataclass
class Literal:
    value: str
    is_string: bool = False


class PromQLError(ValueError):
    pass


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = TOKEN_RE.match(text, pos)
            if m is None:
                raise PromQLError(f"cannot read {text[pos:pos + 20]!r} in {text!r}")
            pos = m.end()
            kind = m.lastgroup or ""
            if kind != "ws":
                self.tokens.append((kind, m.group()))
        self.i = 0
        self.text = text

    def peek(self, offset: int = 0) -> tuple[str, str]:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("eof", "")

    def take(self, value: str | None = None) -> str:
        kind, tok = self.peek()
        if kind == "eof" or (value is not None and tok.lower() != value):
            raise PromQLError(f"expected {value or 'a token'}, found {tok!r} in {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        node = self.expr(0)
        if self.peek()[0] != "eof":
            raise PromQLError(f"unexpected {self.peek()[1]!r} in {self.text!r}")
        return node

    def label_list(self) -> list[str]:
        self.take("(")
        out = []
        while self.peek()[1] != ")":
            out.append(self.take())
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")
        return out

    def expr(self, min_prec: int) -> Any:
        lhs = self.unary()
        while True:
            tok = self.peek()[1].lower()
            prec = PRECEDENCE.get(tok)
            if prec is None or prec < min_prec or self.peek()[0] == "str":
                return lhs
            self.take()
            node = Binary(tok, lhs, None)
            if self.peek()[1].lower() == "bool":
                self.take()
            if self.peek()[1].lower() in ("on", "ignoring"):
                node.ignoring = self.take().lower() == "ignoring"
                node.matching = self.label_list()
            if self.peek()[1].lower() in ("group_left", "group_right"):
                node.group = self.take().lower().removeprefix("group_")
                if self.peek()[1] == "(":
                    node.include = self.label_list()
            node.rhs = self.expr(prec if tok == "^" else prec + 1)
            lhs = node

    def unary(self) -> Any:
        if self.peek()[1] in ("-", "+"):
            op = self.take()
            return Binary("*", Literal("-1" if op == "-" else "1"), self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: Any) -> Any:
        while True:
            tok = self.peek()[1].lower()
            if tok == "[":  # range or subquery: durations only
                while self.take() != "]":
                    pass
                node = Call("__range__", [node])
            elif tok == "offset":
                self.take()
                if self.peek()[1] == "-":
                    self.take()
                self.take()
            elif tok == "@":
                self.take()
                self.take()
                if self.peek()[1] == "(":
                    self.take("(")
                    self.take(")")
            else:
                return node

    def primary(self) -> Any:
        kind, tok = self.peek()
        if kind == "num":
            self.take()
            return Literal(tok)
        if kind == "str":
            self.take()
            return Literal(tok[1:-1], is_string=True)
        if tok == "(":
            self.take("(")
            node = self.expr(0)
            self.take(")")
            return node
        if tok == "{":
            return Selector(None, self.matchers())
        if kind != "ident":
            raise PromQLError(f"unexpected {tok!r} in {self.text!r}")
        self.take()
        low = tok.lower()
        if low in ("inf", "nan"):
            return Literal(tok)
        if low in AGGREGATIONS and self.peek()[1].lower() in ("(", "by", "without"):
            agg = Aggregate(low, [])
            if self.peek()[1].lower() in ("by", "without"):
                agg.without = self.take().lower() == "without"
                agg.grouping = self.label_list()
            agg.args = self.args()
            if self.peek()[1].lower() in ("by", "without"):
                agg.without = self.take().lower() == "without"
                agg.grouping = self.label_list()
            return agg
        if self.peek()[1] == "(" and low not in KEYWORDS:
            return Call(low, self.args())
        return Selector(tok, self.matchers() if self.peek()[1] == "{" else [])

    def args(self) -> list[Any]:
        self.take("(")
        out = []
        while self.peek()[1] != ")":
            out.append(self.expr(0))
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")
        return out

    def matchers(self) -> list[tuple[str, str, str]]:
        self.take("{")
        out = []
        while self.peek()[1] != "}":
            kind, label = self.peek()
            self.take()
            if kind == "str":  # {"metric_name"} (Prometheus 3 quoted names)
                out.append(("__name__", "=", label[1:-1]))
            else:
                op = self.take()
                value = self.take()
                out.append((label, op, value[1:-1]))
            if self.peek()[1] == ",":
                self.take(",")
        self.take("}")
        return out


@dataclass
class Result:
    scalar: bool = False
    labels: frozenset[str] | None = None  # None: unknown (a metric the daemon does not define)


@dataclass
class Checker:
    """Walks a parsed query against the scrape, collecting problems."""

    scrape: Scrape
    where: str
    extra_metrics: frozenset[str] = frozenset()  # recording rules defined next to the query
    problems: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    result: Result = field(default_factory=Result)  # of the whole query

    def fail(self, msg: str) -> None:
        self.problems.append(f"{self.where}: {msg}")

    def need(self, labels: list[str], have: frozenset[str] | None, what: str) -> None:
        if have is None:
            return
        missing = sorted(set(labels) - have)
        if missing:
            self.fail(f"{what} uses label(s) {missing} that are not on {sorted(have)}")

    def check(self, node: Any) -> Result:
        if isinstance(node, Literal):
            return Result(scalar=True, labels=frozenset())
        if isinstance(node, Selector):
            return self.selector(node)
        if isinstance(node, Aggregate):
            return self.aggregate(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Binary):
            return self.binary(node)
        raise AssertionError(node)

    def selector(self, node: Selector) -> Result:
        name = node.name or next((v for k, op, v in node.matchers if k == "__name__" and op == "="), None)
        if name is None or not METRIC.fullmatch(name) or name in self.extra_metrics:
            return Result()
        self.used.add(name)
        have = self.scrape.labels.get(name)
        if have is None:
            self.fail(f"metric {name} is not emitted by the daemon")
            return Result()
        have = have | TARGET_LABELS
        self.need([k for k, _, _ in node.matchers if k != "__name__"], have, name)
        for label, op, value in node.matchers:
            if label == "check" and op in ("=", "=~"):
                wanted = value.split("|") if op == "=~" else [value]
                unknown = [w for w in wanted if not re.fullmatch(r"[a-z_]+", w) or w not in CHECKS]
                if unknown and value not in (".*", ".+", "$check"):
                    self.fail(f"{name}{{check{op}{value!r}}}: {unknown} not among daemon.core.policy.CHECKS")
        return Result(labels=have)

    def aggregate(self, node: Aggregate) -> Result:
        results = [self.check(a) for a in node.args]
        vector = next((r for r in reversed(results) if not r.scalar), Result())
        grouping = node.grouping or []
        if node.op == "count_values" and node.args and isinstance(node.args[0], Literal):
            grouping = [*grouping, node.args[0].value]
        if node.op != "count_values":
            self.need(grouping, vector.labels, f"{node.op} {'without' if node.without else 'by'} ({grouping})")
        if node.op in ("topk", "bottomk", "limitk", "limit_ratio"):
            return Result(labels=vector.labels)
        if node.without:
            return Result(labels=None if vector.labels is None else vector.labels - set(grouping))
        return Result(labels=frozenset(grouping))

    def call(self, node: Call) -> Result:
        results = [self.check(a) for a in node.args]
        if node.fn in SCALAR_FUNCTIONS:
            return Result(scalar=True, labels=frozenset())
        if node.fn == "vector":
            return Result(labels=frozenset())
        if node.fn in ("absent", "absent_over_time"):
            return Result(labels=None)
        vector = next((r for r in results if not r.scalar), Result(labels=frozenset()))
        strings = [a.value for a in node.args if isinstance(a, Literal) and a.is_string]
        if node.fn == "label_replace" and len(strings) == 4:
            dst, _, src, _ = strings
            self.need([src] if src else [], vector.labels, f"label_replace(..., {src!r})")
            return Result(labels=None if vector.labels is None else vector.labels | {dst})
        if node.fn == "label_join" and strings:
            self.need(strings[2:], vector.labels, "label_join")
            return Result(labels=None if vector.labels is None else vector.labels | {strings[0]})
        if node.fn == "histogram_quantile":
            self.need(["le"], vector.labels, "histogram_quantile")
            return Result(labels=None if vector.labels is None else vector.labels - {"le"})
        return Result(labels=vector.labels)

    def binary(self, node: Binary) -> Result:
        lhs, rhs = self.check(node.lhs), self.check(node.rhs)
        if lhs.scalar and rhs.scalar:
            return Result(scalar=True, labels=frozenset())
        if lhs.scalar or rhs.scalar:
            return Result(labels=rhs.labels if lhs.scalar else lhs.labels)
        what = f"{node.op} {'ignoring' if node.ignoring else 'on'} ({node.matching})"
        if node.matching is not None and not node.ignoring:
            self.need(node.matching, lhs.labels, what + " (left side)")
            self.need(node.matching, rhs.labels, what + " (right side)")
        elif node.matching is not None and lhs.labels is not None and rhs.labels is not None:
            self.need(node.matching, lhs.labels | rhs.labels, what)
        if node.group == "left":
            self.need(node.include, rhs.labels, f"group_left ({node.include})")
        elif node.group == "right":
            self.need(node.include, lhs.labels, f"group_right ({node.include})")
        if node.op in SET_OPS:
            if node.op == "or":
                both = None if lhs.labels is None or rhs.labels is None else lhs.labels | rhs.labels
                return Result(labels=both)
            return Result(labels=lhs.labels)
        if node.matching is None and lhs.labels is not None and rhs.labels is not None and lhs.labels != rhs.labels:
            self.fail(f"{node.op} between {sorted(lhs.labels)} and {sorted(rhs.labels)} without on()/ignoring() "
                      "never matches")
        if node.group == "left":
            return Result(labels=None if lhs.labels is None else lhs.labels | set(node.include))
        if node.group == "right":
            return Result(labels=None if rhs.labels is None else rhs.labels | set(node.include))
        if node.matching is not None and not node.ignoring:
            return Result(labels=frozenset(node.matching))
        if node.matching is not None:
            return Result(labels=None if lhs.labels is None else lhs.labels - set(node.matching))
        return Result(labels=lhs.labels)


GRAFANA_MACROS = re.compile(r"\$\{?__(?:rate_interval|interval|range|range_ms|range_s|interval_ms)\}?")


def grafana_to_promql(expr: str) -> str:
    """Grafana's interval macros become a duration; `$var` inside label values stay (they are strings)."""
    return GRAFANA_MACROS.sub("5m", expr)


def label_values_query(query: str) -> str | None:
    """label_values(metric{...}, label) -> metric{...} with the label as a `by` (so it is checked)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", query, re.S)
    if m is None:
        return None
    return f"count by ({m.group(2)}) ({m.group(1)})"


def check_query(scrape: Scrape, where: str, expr: str, extra: frozenset[str] = frozenset()) -> Checker:
    checker = Checker(scrape, where, extra)
    try:
        tree = Parser(expr).parse()
    except PromQLError as exc:
        checker.fail(f"unparsable PromQL: {exc}")
        return checker
    checker.result = checker.check(tree)
    # belt and braces: a pgbackup_ name the parser did not see as a selector still has to exist
    for name in set(METRIC.findall(expr)) - checker.used - extra:
        if not any(name == s for s in scrape.labels):
            checker.fail(f"metric {name} (outside a selector) is not emitted by the daemon")
    return checker


# ---------------------------------------------------------------------------------------------------------------
# What the dashboards and rules use
# ---------------------------------------------------------------------------------------------------------------
def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board.get("panels", []):
        yield p
        yield from p.get("panels", [])  # panels of collapsed rows


def dashboard_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for p in all_panels(board):
        for t in p.get("targets", []):
            if "expr" in t:
                yield f"panel {p['title']!r} target {t.get('refId')}", grafana_to_promql(t["expr"])
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        for text in {q, var.get("definition", "")} - {""}:
            expr = label_values_query(text)
            if expr is None and text.startswith(("label_names(", "metrics(", "query_result(")):
                expr = text[text.index("(") + 1:-1]
            yield f"variable ${var['name']}", grafana_to_promql(expr if expr is not None else text)


def rule_files() -> list[Path]:
    files = sorted([*ALERTS.glob("*.yml"), *ALERTS.glob("*.yaml")])
    return [f for f in files if isinstance(doc := yaml.safe_load(f.read_text()), dict) and "groups" in doc]


def test_dashboards_use_only_emitted_metrics_and_labels(scrape: Scrape) -> None:
    files = dashboard_files()
    assert {f.name for f in files} >= {"pgbackup-overview.json", "pgbackup-drills.json"}
    problems, used = [], set()
    for path in files:
        board = json.loads(path.read_text())
        queries = list(dashboard_queries(board))
        assert queries, f"{path.name} has no queries"
        for where, expr in queries:
            c = check_query(scrape, f"{path.name} {where}: {expr}", expr)
            problems += c.problems
            used |= c.used
    assert not problems, "\n".join(problems)
    assert len(used) >= 30  # the parser really found the metrics


def test_alert_rules_use_only_emitted_metrics_and_labels(scrape: Scrape) -> None:
    """Every rules file in alerts/ (none yet is fine): rule expressions, the PromQL inside annotation templates,
    and the `$labels.x` the annotations read (which must survive the expression's aggregation)."""
    problems = []
    for path in rule_files():
        doc = yaml.safe_load(path.read_text())
        rules = [r for g in doc["groups"] for r in g.get("rules", [])]
        recorded = frozenset(r["record"] for r in rules if "record" in r)
        for rule in rules:
            name = rule.get("alert") or rule.get("record")
            where = f"{path.name} {name}"
            c = check_query(scrape, where, str(rule["expr"]), recorded)
            problems += c.problems
            result = c.result
            for key, text in (rule.get("annotations") or {}).items():
                for metric, matchers in re.findall(r"(pgbackup_[a-z0-9_]+)(?:\{([^}]*)\})?", text):
                    if metric in recorded:
                        continue
                    if metric not in scrape.labels:
                        problems.append(f"{where} annotation {key}: metric {metric} is not emitted")
                        continue
                    for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers):
                        if label not in scrape.labels[metric] | TARGET_LABELS:
                            problems.append(f"{where} annotation {key}: {metric} has no label {label!r}")
                if result.labels is not None:
                    available = result.labels | set(rule.get("labels") or {})
                    for label in re.findall(r"\$labels\.([a-zA-Z_]\w*)", text):
                        if label not in available:
                            problems.append(f"{where} annotation {key} reads $labels.{label}, but the alert only "
                                            f"carries {sorted(available)}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------------
# The parser itself, and the dashboards' structure
# ---------------------------------------------------------------------------------------------------------------
FAKE = Scrape({"pgbackup_rpo_seconds": frozenset({"database"}),
               "pgbackup_rto_seconds": frozenset({"database", "scenario"}),
               "pgbackup_actions_total": frozenset({"action", "outcome"}),
               "pgbackup_finding_active": frozenset({"database", "check", "severity"})}, frozenset(), "")


@pytest.mark.parametrize(("expr", "complaint"), [
    ("pgbackup_rpo_seconds", None),
    ('max by (database) (pgbackup_rto_seconds{scenario="x"}) / on (database) pgbackup_rpo_seconds', None),
    ("sum by (action, outcome) (increase(pgbackup_actions_total[$__rate_interval]))", None),
    ('up{job=~"g.*"} or absent(up{job=~"g.*"}) * -1', None),
    ("time() - pgbackup_rpo_seconds offset 5m > bool 3", None),
    ("max_over_time(pgbackup_rpo_seconds[1h:5m])", None),
    ("pgbackup_rto_seconds * on (database) group_left pgbackup_rpo_seconds", None),
    ("pgbackup_actions", "pgbackup_actions is not emitted"),
    ("pgbackup_rpo_seconds_total", "not emitted"),
    ("sum by (scenario) (pgbackup_rpo_seconds)", "['scenario']"),
    ("sum(pgbackup_rpo_seconds) by (tier)", "['tier']"),
    ('pgbackup_rpo_seconds{source="heroku"}', "['source']"),
    ("pgbackup_rpo_seconds / on (scenario) pgbackup_rto_seconds", "['scenario']"),
    ("pgbackup_rto_seconds / on (database) group_left (plan) pgbackup_rpo_seconds", "['plan']"),
    ("sum by (database) (pgbackup_rto_seconds) / on (database) sum by (action) (pgbackup_actions_total)",
     "['database']"),
    ("pgbackup_rto_seconds / pgbackup_rpo_seconds", "never matches"),
    ('pgbackup_finding_active{check="rpo_breached"}', "CHECKS"),
    ('pgbackup_finding_active{check=~"drill_failed|drill_overdue"}', None),
])
def test_the_promql_checker_finds_unknown_names_and_labels(expr: str, complaint: str | None) -> None:
    problems = check_query(FAKE, "q", grafana_to_promql(expr)).problems
    if complaint is None:
        assert not problems
    else:
        assert problems and complaint in problems[0], problems


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"] == path.stem and board["uid"] in ("pgbackup-overview", "pgbackup-drills")
    assert board["schemaVersion"] >= 39 and board["title"] and "timepicker" in board and board["time"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    db = variables["database"]
    assert db["type"] == "query" and db["multi"] and db["includeAll"]
    assert "label_values(pgbackup_rpo_seconds, database)" in json.dumps(db["query"])
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, var["name"]
    ids, panels = set(), list(all_panels(board))
    assert len([p for p in panels if p["type"] != "row"]) >= 8
    for p in panels:
        assert p["id"] not in ids, f"duplicate panel id {p['id']}"
        ids.add(p["id"])
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            assert not p.get("targets"), p["title"]
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]


def test_generated_json_is_up_to_date() -> None:
    proc = subprocess.run([sys.executable, str(DASHBOARDS / "generate.py"), "--check"], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_provisioning_files() -> None:
    providers = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards.yml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    sources = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources.yml").read_text())
    [source] = sources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
