"""The loopback-only control API must not be reachable through the developer's browser either: a foreign
page can send cross-site "simple" POSTs (form or text/plain bodies) to 127.0.0.1, or rebind its own DNS
name to 127.0.0.1 and call with its own Host. Such requests are refused and change nothing."""

from __future__ import annotations

import pytest
import requests

RULE = {"path": "/dataSources$", "status": 500}


@pytest.fixture(autouse=True)
def _clear(sandbox):
    sandbox.clear_faults()
    sandbox.set_refresh_rotation(False)
    yield
    sandbox.clear_faults()


def _unchanged(sandbox, clock_before):
    assert sandbox.context.faults.rules() == []
    assert sandbox.context.rotate_refresh_tokens is False
    assert sandbox.now() - clock_before < 50  # the clock was not advanced by 100 s


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/_sandbox/faults", b'{"path": "/dataSources$", "status": 500}', "text/plain"),
        ("/_sandbox/faults", b'{"path": "/dataSources$", "status": 500}', None),
        ("/_sandbox/settings", b"rotate_refresh_tokens=true", "application/x-www-form-urlencoded"),
        ("/_sandbox/clock", b'{"advance_seconds": 100}', "multipart/form-data; boundary=x"),
        ("/_sandbox/users/123/revoke", b"", None),
    ],
    ids=["text-plain", "no-content-type", "form", "multipart", "empty-revoke"],
)
def test_posts_that_are_not_json_are_refused(sandbox, path, body, content_type):
    before = sandbox.now()
    headers = {"Content-Type": content_type} if content_type else {}
    answer = requests.post(sandbox.url + path, data=body, headers=headers, timeout=5)
    assert answer.status_code == 415
    assert "Content-Type: application/json" in answer.json()["error"]
    _unchanged(sandbox, before)


@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:8765", "127.0.0.1.nip.io", "evil@127.0.0.1", ""]
)
def test_requests_for_a_foreign_host_are_refused(sandbox, host):
    """What a DNS-rebinding page sends: its own name in Host, the sandbox's address on the wire."""
    before = sandbox.now()
    post = requests.post(sandbox.url + "/_sandbox/faults", json=RULE, headers={"Host": host}, timeout=5)
    assert post.status_code == 403 and "loopback host" in post.json()["error"]
    read = requests.get(sandbox.url + "/_sandbox/faults", headers={"Host": host}, timeout=5)
    assert read.status_code == 403
    _unchanged(sandbox, before)


@pytest.mark.parametrize("origin", ["https://attacker.example", "null", "http://127.0.0.1.attacker.example"])
def test_requests_from_a_foreign_origin_are_refused(sandbox, origin):
    before = sandbox.now()
    for path, body in [
        ("/_sandbox/faults", RULE),
        ("/_sandbox/settings", {"rotate_refresh_tokens": True}),
        ("/_sandbox/clock", {"advance_seconds": 100}),
    ]:
        answer = requests.post(sandbox.url + path, json=body, headers={"Origin": origin}, timeout=5)
        assert answer.status_code == 403 and "cross-site" in answer.json()["error"]
    sandbox.add_fault(path="/never$", status=500)
    cleared = requests.delete(sandbox.url + "/_sandbox/faults", headers={"Origin": origin}, timeout=5)
    assert cleared.status_code == 403
    assert len(sandbox.context.faults.rules()) == 1
    sandbox.clear_faults()
    _unchanged(sandbox, before)


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        (None, None),
        ("localhost:{port}", "http://localhost:{port}"),
        ("[::1]:{port}", "http://[::1]:{port}"),
        ("LOCALHOST", None),
        ("127.0.0.1", "http://127.0.0.1:{port}"),
    ],
    ids=["default", "localhost", "ipv6", "upper-case", "no-port"],
)
def test_loopback_names_with_json_are_served(sandbox, host, origin):
    port = sandbox.url.rsplit(":", 1)[1]
    headers = {}
    if host is not None:
        headers["Host"] = host.format(port=port)
    if origin is not None:
        headers["Origin"] = origin.format(port=port)
    answer = requests.post(sandbox.url + "/_sandbox/faults", json=RULE, headers=headers, timeout=5)
    assert answer.status_code == 201
    assert [r.path for r in sandbox.context.faults.rules()] == ["/dataSources$"]
