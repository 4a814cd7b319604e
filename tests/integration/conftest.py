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


@pytest.fixture(scope="session")
def fault_upstream():
    """An upstream that misbehaves on purpose, chosen by the request body's model (OpenAI) or by
    a fixed Triton path: garbage bytes instead of HTTP, HTML under 200, a reset before any
    answer, a 6 MB body, no answer at all, and streams cut mid-way."""
    import socket as socketlib
    import threading

    server = socketlib.socket()
    server.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    port = server.getsockname()[1]
    stop = threading.Event()

    def read_request(conn):
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head.split(b" ")[1].decode(), body

    def respond(conn, status, body, ctype=b"application/json"):
        # It closes every connection after one answer, and says so: without `connection:
        # close` Envoy pools the connection and may send the next request on it as it closes
        # (a 503 "connection termination" seen once on a busy machine).
        conn.sendall(b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                     % (status, ctype, len(body), body))

    def handle(conn):
        try:
            req = read_request(conn)
            if req is None:
                return
            path, body = req
            try:
                model = json.loads(body).get("model", "")
            except ValueError:
                model = ""
            if path.endswith("/generate_stream"):
                model = "tri-stream-reset"
            elif path.endswith("/generate"):
                model = "tri-garbage"
            if model in ("garbage", "tri-garbage") and path.startswith("/v1"):
                conn.sendall(b"\x00\xff this is not HTTP \r\n\r\n")
            elif model == "tri-garbage":
                respond(conn, 200, b"<html>definitely not a generate response</html>", b"text/html")
            elif model == "html200":
                respond(conn, 200, b"<html>maintenance</html>", b"text/html")
            elif model == "reset":
                conn.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            elif model == "huge":
                respond(conn, 200, json.dumps({"object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "x" * 6_000_000}, "finish_reason": "stop"}]}).encode())
            elif model == "hang":
                stop.wait(30)
            elif model == "tri-stream-reset":
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                event = b'data: {"text_output":"partial "}\n\n'
                conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                time.sleep(0.1)
                conn.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            else:
                respond(conn, 404, b'{"error":"unknown fault"}')
        except OSError:
            pass
        finally:
            conn.close()

    def serve():
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except socketlib.timeout:
                continue
            except OSError:
                break
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield port, stop
    stop.set()
    server.close()
