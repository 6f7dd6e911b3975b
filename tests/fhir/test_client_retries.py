"""The client's retry policy and error reporting, against a real HTTP server answering from a script."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fitonfhir_dagster.fhir import (
    FhirAuthError,
    FhirClient,
    FhirError,
    FhirTransportError,
    InvalidResource,
    PreconditionFailed,
    ResourceConflict,
    put_entry,
)
from fitonfhir_dagster.http.retry_schedule import RetrySchedule
from tests.support.randomness import FixedRandom

OBS = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "hr"}}
OK_OBS = (200, {}, {**OBS, "meta": {"versionId": "1"}})


def outcome(text: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}],
    }


@dataclass
class Scripted:
    """Answers requests in order from ``script``: (status, headers, body[, delay seconds])."""

    script: deque = field(default_factory=deque)
    requests: list = field(default_factory=list)
    url: str = ""


@pytest.fixture
def scripted():
    state = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.requests.append((self.command, self.path, dict(self.headers), body))
            status, headers, payload, *delay = state.script.popleft() if state.script else (599, {}, None)
            if delay:
                time.sleep(delay[0])
            data = json.dumps(payload).encode() if isinstance(payload, dict) else (payload or b"")
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PUT = do_DELETE = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    yield state
    server.shutdown()
    server.server_close()


def client_for(scripted: Scripted, sleeps: list, **kwargs) -> FhirClient:
    kwargs.setdefault(
        "retry_schedule",
        RetrySchedule(base_delay=0.5, max_delay=8, max_retry_after=300, rng=FixedRandom(0.0)),
    )  # jitter factor 0.5, deterministic
    return FhirClient(scripted.url, sleep=sleeps.append, **kwargs)


def test_429_with_retry_after_waits_that_long_then_succeeds(scripted):
    scripted.script.extend([(429, {"Retry-After": "3"}, outcome("slow down")), OK_OBS])
    sleeps: list[float] = []
    assert client_for(scripted, sleeps).read("Observation", "o1")["id"] == "o1"
    assert sleeps == [3.0]
    assert len(scripted.requests) == 2


def test_5xx_backs_off_exponentially_and_gives_up_after_max_attempts(scripted):
    scripted.script.extend([(503, {}, outcome("busy"))] * 4)
    sleeps: list[float] = []
    with pytest.raises(FhirError) as raised:
        client_for(scripted, sleeps, max_attempts=4).read("Observation", "o1")
    assert raised.value.status == 503 and "busy" in str(raised.value)
    assert len(scripted.requests) == 4
    assert sleeps == [0.25, 0.5, 1.0]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, FhirError),
        (401, FhirAuthError),
        (403, FhirAuthError),
        (404, FhirError),
        (409, ResourceConflict),
        (412, PreconditionFailed),
        (422, InvalidResource),
    ],
)
def test_client_errors_are_not_retried(scripted, status, error_type):
    scripted.script.append((status, {}, outcome(f"refused with {status}")))
    sleeps: list[float] = []
    with pytest.raises(error_type) as raised:
        client_for(scripted, sleeps).update(OBS, if_match="1")
    assert len(scripted.requests) == 1 and sleeps == []
    assert raised.value.status == status
    assert f"refused with {status}" in str(raised.value) and "PUT Observation/o1" in str(raised.value)


def test_a_timeout_is_retried_and_a_persistent_one_fails_clearly(scripted):
    scripted.script.extend([(200, {}, OBS, 1.0), OK_OBS])
    sleeps: list[float] = []
    client = client_for(scripted, sleeps, timeout=0.2)
    assert client.read("Observation", "o1")["id"] == "o1"
    assert len(sleeps) == 1

    scripted.script.extend([(200, {}, OBS, 1.0)] * 2)
    with pytest.raises(FhirTransportError) as raised:
        client_for(scripted, [], timeout=0.2, max_attempts=2).read("Observation", "o1")
    assert raised.value.status is None and "ReadTimeout" in str(raised.value)


def test_connection_refused_is_retried_then_reported(scripted):
    sleeps: list[float] = []
    client = FhirClient("http://127.0.0.1:9/fhir", max_attempts=3, sleep=sleeps.append, timeout=2)
    with pytest.raises(FhirTransportError) as raised:
        client.read("Observation", "o1")
    assert len(sleeps) == 2 and "GET Observation/o1" in str(raised.value)


def test_plain_create_is_not_repeated_after_a_500_but_is_after_a_429(scripted):
    scripted.script.append((500, {}, outcome("maybe written")))
    with pytest.raises(FhirError):
        client_for(scripted, []).create(OBS)
    assert len(scripted.requests) == 1

    scripted.script.extend([(429, {}, outcome("later")), (201, {}, {**OBS, "id": "server-id"})])
    assert client_for(scripted, []).create(OBS)["id"] == "server-id"
    assert len(scripted.requests) == 3
    assert "id" not in json.loads(scripted.requests[-1][3])  # the server picks the id


def test_a_transaction_is_retried_as_a_whole_on_503_only(scripted):
    response = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": "201"}}],
    }
    scripted.script.extend([(503, {}, outcome("busy")), (200, {}, response)])
    results = client_for(scripted, []).transaction([put_entry(OBS)])
    assert [r.status for r in results] == [201]
    assert len(scripted.requests) == 2 and scripted.requests[0][3] == scripted.requests[1][3]

    scripted.script.append((400, {}, outcome("Bundle.entry[0]: bad")))
    with pytest.raises(FhirError, match=r"Bundle.entry\[0\]: bad"):
        client_for(scripted, []).transaction([put_entry(OBS)])
    assert len(scripted.requests) == 3


def test_bundles_are_chunked(scripted):
    def answer(n: int) -> tuple:
        return (
            200,
            {},
            {
                "resourceType": "Bundle",
                "type": "batch-response",
                "entry": [{"response": {"status": "200 OK"}}] * n,
            },
        )

    scripted.script.extend([answer(2), answer(2), answer(1)])
    entries = [put_entry({**OBS, "id": f"o{i}"}) for i in range(5)]
    results = client_for(scripted, [], bundle_size=2).batch(entries)
    assert len(results) == 5
    assert [len(json.loads(r[3])["entry"]) for r in scripted.requests] == [2, 2, 1]
    assert all(r[1] == "/fhir/" and r[0] == "POST" for r in scripted.requests)


def test_a_response_bundle_with_missing_entries_is_an_error(scripted):
    scripted.script.append((200, {}, {"resourceType": "Bundle", "type": "transaction-response", "entry": []}))
    with pytest.raises(FhirError, match="1 entries sent, 0 answered"):
        client_for(scripted, []).transaction([put_entry(OBS)])


class RefreshingAuth:
    def __init__(self):
        self.tokens = iter(["first-secret", "second-secret"])
        self.current = next(self.tokens)

    def authorization(self) -> str:
        return f"Bearer {self.current}"

    def invalidate(self) -> bool:
        self.current = next(self.tokens, "exhausted")
        return True


def test_401_refreshes_the_credential_once(scripted):
    scripted.script.extend([(401, {}, outcome("expired")), OK_OBS])
    client = client_for(scripted, [], auth=RefreshingAuth())
    assert client.read("Observation", "o1")["id"] == "o1"
    assert [r[2]["Authorization"] for r in scripted.requests] == [
        "Bearer first-secret",
        "Bearer second-secret",
    ]

    scripted.script.extend([(401, {}, outcome("still no")), (401, {}, outcome("still no"))])
    with pytest.raises(FhirAuthError) as raised:
        client.read("Observation", "o1")
    assert len(scripted.requests) == 4
    assert "secret" not in str(raised.value) and "secret" not in repr(raised.value.__dict__)


def test_errors_name_method_and_path_but_never_the_query_or_token(scripted):
    scripted.script.append((400, {}, outcome("unknown parameter")))
    client = client_for(scripted, [], auth=RefreshingAuth())
    with pytest.raises(FhirError) as raised:
        client.search("Patient", {"identifier": "https://accounts.google.com|private-sub"})
    message = str(raised.value)
    assert "GET Patient" in message and "unknown parameter" in message
    assert "private-sub" not in message and "first-secret" not in message


def test_a_next_link_to_another_origin_is_not_followed(scripted):
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [],
        "link": [{"relation": "next", "url": "http://evil.example/fhir/Observation?page=2"}],
    }
    scripted.script.append((200, {}, page))
    with pytest.raises(FhirError, match="another origin"):
        client_for(scripted, [], auth=RefreshingAuth()).search("Observation", {})
    assert len(scripted.requests) == 1


def test_conditional_create_sends_if_none_exist_encoded(scripted):
    scripted.script.append((201, {}, {**OBS, "id": "new"}))
    resource, created = client_for(scripted, []).conditional_create(OBS, "identifier=urn%3Asys%7Cv1")
    assert created and resource["id"] == "new"
    assert scripted.requests[0][2]["If-None-Exist"] == "identifier=urn%3Asys%7Cv1"


def test_update_sends_if_match_as_weak_etag(scripted):
    scripted.script.append(OK_OBS)
    client_for(scripted, []).update(OBS, if_match="7")
    method, path, headers, _ = scripted.requests[0]
    assert (method, path, headers["If-Match"]) == ("PUT", "/fhir/Observation/o1", 'W/"7"')
    assert headers["Content-Type"] == "application/fhir+json"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"base_url": "localhost:8080/fhir"}, "absolute http"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"bundle_size": 0}, "bundle_size"),
    ],
)
def test_bad_client_settings_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        FhirClient(**{"base_url": "http://127.0.0.1/fhir", **kwargs})
