"""Operations: health, readiness, metrics, migrations, graceful stop."""
import re
import signal
import time

import pytest
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


def test_metrics_is_prometheus_text(server):
    r = requests.get(server.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r'[a-z_:][a-z0-9_:]*(\{([a-z_]+="[^"]*",?)*\})? [-+0-9.eEInfa]+', line), line
    for name in ["mxkeys_http_requests_total", "mxkeys_http_request_duration_seconds", "mxkeys_db_inflight",
                 "mxkeys_db_connections", "mxkeys_offload_queued", "mxkeys_offload_jobs_total"]:
        assert f"# TYPE {name} " in r.text, name


def test_metrics_histogram_is_consistent(server):
    for _ in range(2):
        requests.get(server.url + "/_mxkeys/ready")
    text = requests.get(server.url + "/metrics").text
    labels = 'method="GET",route="/_mxkeys/ready"'
    buckets = []
    for line in text.splitlines():
        m = re.fullmatch(r'mxkeys_http_request_duration_seconds_bucket\{' + re.escape(labels) + r',le="([^"]+)"\} (\S+)',
                         line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
    assert len(buckets) >= 5 and buckets[-1][0] == float("inf"), buckets
    assert [le for le, _ in buckets] == sorted(le for le, _ in buckets)
    assert [n for _, n in buckets] == sorted(n for _, n in buckets), "buckets must be cumulative"
    count = metric(text, "mxkeys_http_request_duration_seconds_count", labels)
    assert buckets[-1][1] == count >= 2
    assert metric(text, "mxkeys_http_request_duration_seconds_sum", labels) >= 0


def test_metrics_count_errors_under_their_route(server):
    labels = 'method="GET",route="/account/whoami",status="401"'
    n0 = metric(requests.get(server.url + "/metrics").text, "mxkeys_http_requests_total", labels) or 0
    for _ in range(2):
        requests.get(server.url + "/_matrix/client/v3/account/whoami")
        requests.get(server.url + "/_matrix/client/r0/account/whoami", headers={"Authorization": "Bearer nope"})
    assert metric(requests.get(server.url + "/metrics").text, "mxkeys_http_requests_total", labels) == n0 + 4


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_zero(start_server, login, sig):
    s = start_server()
    _, _, c = login(s)
    assert c.get("/account/whoami").status_code == 200
    t0 = time.monotonic()
    assert s.stop(sig) == 0
    assert time.monotonic() - t0 < 10, "an idle server stops promptly"
    assert "stopped" in s.stderr_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(s.url + "/_mxkeys/health", timeout=2)


def test_metrics_count_offloaded_signature_checks(server, login):
    """A strict upload of signed one-time keys has its signatures checked on an offload thread: counted."""
    from olmkeys import Device
    user, device_id, c = login(server)
    dev = Device(user, device_id)
    done = 'outcome="done"'
    before = metric(requests.get(server.url + "/metrics").text, "mxkeys_offload_jobs_total", done)
    r = c.post("/keys/upload", json={"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(5)})
    assert r.status_code == 200, r.text
    text = requests.get(server.url + "/metrics").text
    assert metric(text, "mxkeys_offload_jobs_total", done) >= before + 1
    assert metric(text, "mxkeys_offload_queued") is not None
