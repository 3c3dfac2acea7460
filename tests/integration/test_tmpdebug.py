import signal, requests, time
def test_dbg(start_server, login):
    s = start_server()
    _, _, c = login(s)
    assert c.get("/account/whoami").status_code == 200
    rc = s.stop(signal.SIGTERM)
    print("RC", rc)
    print(s.stderr_text()[-1500:])
