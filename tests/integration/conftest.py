import http.client
import json
import time

import pytest

import mock_openai
from harness import Gateway, TritonServer


@pytest.fixture(scope="session")
def mock_a():
    server, recorder = mock_openai.start(name="a")
    yield server.server_port, recorder
    server.shutdown()


@pytest.fixture(scope="session")
def mock_b():
    server, recorder = mock_openai.start(name="b")
    yield server.server_port, recorder
    server.shutdown()


@pytest.fixture(scope="session")
def triton():
    server = TritonServer()
    yield server
    server.stop()


@pytest.fixture
def gateway_factory():
    started = []

    def make(config, upstream_ports, **kw):
        gw = Gateway(config, upstream_ports, **kw)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def stream_events(url, path, body, headers=None):
    """POST and read an SSE response as it arrives: [(seconds since send, data)] and the response."""
    host_port = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host_port, timeout=30)
    start = time.monotonic()
    conn.request("POST", path, body=json.dumps(body),
                 headers={"content-type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    events, buf = [], b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    events.append((time.monotonic() - start, line[6:].decode()))
    conn.close()
    return resp, events
