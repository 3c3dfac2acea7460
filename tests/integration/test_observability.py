"""deploy/grafana/mxkeys.json and deploy/prometheus/mxkeys-alerts.yml load and mean something: the rules pass
`promtool check rules` and their unit tests, every dashboard query is valid PromQL, and every metric, label and
label value they select on is one a running mxkeysd really exports (scraped from a local-auth server and from one
beside an unreachable homeserver, after requests that produce 200 and 503)."""
import json
import os
import re
import shutil
import subprocess

import pytest
import requests
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DASHBOARD = os.path.join(REPO, "deploy", "grafana", "mxkeys.json")
RULES_DIR = os.path.join(REPO, "deploy", "prometheus")
RULES = os.path.join(RULES_DIR, "mxkeys-alerts.yml")
PROMETHEUS_OWN = {"up"}  # series Prometheus itself makes for each target
ADDED_BY_PROMETHEUS = {"instance", "job"}

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) missing")


def promtool(*args, cwd=None):
    r = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}{r.stderr}"
    return r.stdout


def dashboard():
    return json.load(open(DASHBOARD))


def dashboard_exprs():
    exprs = []
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            exprs.append((p["title"], t["expr"]))
    return exprs


def alert_exprs():
    return [(r["alert"], r["expr"]) for g in yaml.safe_load(open(RULES))["groups"] for r in g["rules"]]


def as_promql(expr):
    """A dashboard query with Grafana's variables replaced by what they stand for at run time."""
    return expr.replace("$__rate_interval", "5m").replace("$instance", ".*")


@needs_promtool
def test_alert_rules_pass_promtool_check_and_unit_tests():
    promtool("check", "rules", RULES)
    promtool("test", "rules", "mxkeys-alerts.test.yml", cwd=RULES_DIR)


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"mxkeys_dashboard:query{i}", "expr": as_promql(e)} for i, (_, e) in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool("check", "rules", str(path))


def test_dashboard_is_a_well_formed_grafana_dashboard():
    d = dashboard()
    assert d["uid"] == "mxkeys" and d["title"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "instance" in variables
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{p['title']}: outside the 24-column grid"
        for cx in range(g["x"], g["x"] + g["w"]):
            for cy in range(g["y"], g["y"] + g["h"]):
                assert (cx, cy) not in cells, f"{p['title']} overlaps another panel"
                cells.add((cx, cy))
        if p["type"] == "row":
            continue
        assert p["type"] in ("timeseries", "stat") and p.get("description"), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", f"{p['title']}: not on the dashboard's data source"
        assert p["targets"], f"{p['title']}: no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and 'instance=~"$instance"' in t["expr"], t["expr"]
    titles = " ".join(p["title"].lower() for p in d["panels"])
    for topic in ("requests", "p99", "connections", "queue", "offload", "503", "homeserver"):
        assert topic in titles, f"no panel about {topic}"


def scrape(url):
    """{metric name: [label dicts]} from Prometheus text; histograms also under their _bucket/_sum/_count names."""
    samples = {}
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ', line)
        assert m, f"unparsable sample line {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        samples.setdefault(m.group(1), []).append(labels)
    return samples


@pytest.fixture(scope="module")
def exported(start_server, server):
    """What mxkeysd exports, merged from a local-auth server and one in homeserver mode whose homeserver cannot be
    reached (so that the homeserver figures and a 503 show)."""
    whoami = "/_matrix/client/v3/account/whoami"
    token = server.mint("@observer:localhost", "OBSDEV")
    r = requests.get(server.url + whoami, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    sidecar = start_server(auth="homeserver", homeserver_url="http://127.0.0.1:9", homeserver_timeout_ms=1000,
                           token_negative_ms=0)
    r = requests.get(sidecar.url + whoami, headers={"Authorization": "Bearer some-token"}, timeout=10)
    assert r.status_code == 503, r.text
    merged = {}
    for s in (server, sidecar):
        for name, label_sets in scrape(s.url).items():
            merged.setdefault(name, []).extend(label_sets)
    return merged


SELECTOR = re.compile(r'\b(mxkeys_[a-z_]+|up)\b(\{([^}]*)\})?')
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_select_only_what_mxkeysd_exports(exported, source):
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    problems = []
    for where, expr in exprs:
        for m in SELECTOR.finditer(as_promql(expr)):
            name = m.group(1)
            if name in PROMETHEUS_OWN:
                continue
            if name not in exported:
                problems.append(f"{where}: {name} is not exported")
                continue
            label_sets = exported[name]
            for label, op, value in MATCHER.findall(m.group(3) or ""):
                if label in ADDED_BY_PROMETHEUS:
                    continue
                values = {ls.get(label) for ls in label_sets} - {None}
                if not values:
                    problems.append(f"{where}: {name} has no label {label}")
                elif op == "=" and value not in values:
                    problems.append(f"{where}: {name}{{{label}={value!r}}} never exported (seen {sorted(values)})")
                elif op == "=~" and not any(re.fullmatch(value, v) for v in values):
                    problems.append(f"{where}: {name}{{{label}=~{value!r}}} matches nothing exported")
    assert not problems, "\n".join(problems)


def test_every_alert_and_panel_is_described_in_the_readme():
    readme = open(os.path.join(REPO, "README.md")).read()
    section = readme.split("## Dashboards and alerts", 1)
    assert len(section) == 2, "README.md has no 'Dashboards and alerts' section"
    text = section[1].split("\n## ", 1)[0]
    missing = [a for a, _ in alert_exprs() if f"`{a}`" not in text]
    missing += [p["title"] for p in dashboard()["panels"] if p["type"] != "row" and f"**{p['title']}**" not in text]
    assert not missing, f"not described in README's 'Dashboards and alerts': {missing}"
