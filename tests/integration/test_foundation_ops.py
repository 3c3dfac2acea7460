"""Operations: health, readiness, metrics, migrations, graceful stop."""
import re
import signal

import requests


def test_health_and_ready(server):
    assert requests.get(server.url + "/_mxkeys/health").json() == {"status": "ok"}
    r = requests.get(server.url + "/_mxkeys/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def metric(text, name, labels=""):
    for line in text.splitlines():
        if line.startswith(name + "{" + labels) or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_by_route_and_status(server):
    before = requests.get(server.url + "/metrics").text
    for _ in range(3):
        requests.get(server.url + "/_mxkeys/health")
    text = requests.get(server.url + "/metrics").text
    labels = 'method="GET",route="/_mxkeys/health",status="200"'
    n0 = metric(before, "mxkeys_http_requests_total", labels) or 0
    assert metric(text, "mxkeys_http_requests_total", labels) >= n0 + 3
    assert re.search(r'mxkeys_http_request_duration_seconds_bucket\{method="GET",route="/_mxkeys/health",le="\+Inf"\}',
                     text)
    assert "# TYPE mxkeys_http_request_duration_seconds histogram" in text
    assert metric(text, "mxkeys_db_connections", 'state="ready"') >= 1
    assert metric(text, "mxkeys_db_inflight") is not None
    # unrouted requests are counted too
    requests.get(server.url + "/nope")
    text = requests.get(server.url + "/metrics").text
    assert metric(text, "mxkeys_http_requests_total", 'method="-",route="unrouted",status="404"') >= 1


def test_migrations_are_idempotent(server, pg):
    count = pg.psql("SELECT count(*) FROM schema_migrations")
    assert int(count) >= 1
    for _ in range(2):
        r = server.cli("migrate")
        assert r.returncode == 0
    assert pg.psql("SELECT count(*) FROM schema_migrations") == count


def test_sigterm_exits_zero(start_server):
    s = start_server()
    assert requests.get(s.url + "/_mxkeys/health").status_code == 200
    assert s.stop(signal.SIGTERM) == 0
    assert "stopped" in s.stderr_text()
