"""A small OpenAI-compatible upstream (vLLM-flavoured) for tests and the demo.

It records every request it receives (method, path, headers, body) so tests can assert what
the gateway sent. Behaviour is steered by the request's `model`:
  - "fail-400": answers a vLLM-style error (integer `code`)
    - "slow": answers after 3 seconds
  - "fail-500": answers a server error
  - "flaky-429:N:<tag>": answers 429 with `retry-after: 1` to the first N requests naming
    exactly this model, then normally (a tag per test keeps the counts apart)
  - anything else: a normal answer naming the model and this server's `name` (for a chat
    with `response_format: json_schema`, the smallest JSON the schema accepts)
Streaming answers send `STREAM_CHUNKS` chunks `STREAM_INTERVAL` seconds apart.

Run standalone: python3 mock_openai.py --port 8001 [--name demo]
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STREAM_CHUNKS = 5
STREAM_INTERVAL = 0.2


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []

    def add(self, entry):
        with self.lock:
            self.requests.append(entry)

    def take(self):
        with self.lock:
            out, self.requests = self.requests, []
            return out


def smallest_instance(schema, root):
    """The smallest JSON value `schema` accepts: required members only, empty arrays."""
    ref = schema.get("$ref", "")
    if ref.startswith("#/"):
        target = root
        for part in ref[2:].split("/"):
            target = target.get(part, {})
        return smallest_instance(target, root)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return smallest_instance(schema[key][0], root)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {k: smallest_instance(props.get(k, {}), root) for k in schema.get("required", [])}
    return {"array": [], "string": "", "integer": 0, "number": 0, "boolean": False}.get(kind)


def make_handler(name, recorder):
    flaky_seen = {}
    flaky_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mock-openai"

        def log_message(self, *args):
            pass

        def _body(self):
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status, obj, content_type="application/json"):
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            if getattr(self, "litellm_upstream", False):
                # As a LiteLLM proxy behind the gateway answers: its own LiteLLM headers.
                self.send_header("X-LiteLLM-Model-Id", "upstream-deployment")
                self.send_header("x-litellm-version", "0.0.0-upstream")
            self.end_headers()
            self.wfile.write(data)

        def _record(self, body):
            recorder.add({
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            })

        def do_GET(self):
            self._record(b"")
            if self.path == "/metrics":
                self._send(200, b"vllm:num_requests_running 0\n", "text/plain; version=0.0.4")
            elif self.path in ("/health", "/v1/health"):
                self._send(200, b"", "text/plain")
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            else:
                self._send(404, {"object": "error", "message": f"no route {self.path}", "code": 404})

        def do_POST(self):
            raw = self._body()
            self._record(raw)
            try:
                req = json.loads(raw or b"{}")
            except ValueError:
                req = {}
            model = req.get("model") if isinstance(req, dict) else None
            if model == "slow":
                time.sleep(3)
            self.litellm_upstream = model == "litellm-upstream"
            if model == "fail-500":
                self._send(500, {"error": {"message": "mock is broken", "type": "InternalServerError",
                                           "param": None, "code": 500}})
                return
            if isinstance(model, str) and model.startswith("flaky-429:"):
                with flaky_lock:
                    seen = flaky_seen[model] = flaky_seen.get(model, 0) + 1
                if seen <= int(model.split(":")[1]):
                    data = json.dumps({"error": {"message": "rate limited", "type": "rate_limit_error",
                                                 "param": None, "code": 429}}).encode()
                    self.send_response(429)
                    self.send_header("content-type", "application/json")
                    self.send_header("retry-after", "1")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
            if model == "fail-400":
                self._send(400, {"error": {"message": "mock refused the request", "type": "BadRequestError",
                                           "param": None, "code": 400}})
                return
            path = self.path.split("?")[0]
            if path.endswith("/chat/completions"):
                self._chat(req, model)
            elif path.endswith("/completions"):
                self._completion(req, model)
            elif path.endswith("/embeddings"):
                inputs = req.get("input")
                inputs = inputs if isinstance(inputs, list) else [inputs]
                self._send(200, {"object": "list", "model": model,
                                 "data": [{"object": "embedding", "index": i, "embedding": [0.5, -0.25, float(i)]}
                                          for i in range(len(inputs))],
                                 "usage": {"prompt_tokens": 3, "total_tokens": 3}})
            elif path == "/score":
                self._send(200, {"object": "list", "model": model, "data": [{"index": 0, "score": 0.75}]})
            elif path == "/tokenize":
                self._send(200, {"tokens": [1, 2, 3], "count": 3})
            else:
                self._send(404, {"object": "error", "message": f"no route {path}", "code": 404})

        def _chat(self, req, model):
            text = f"{name} says hello to {model}"
            fmt = req.get("response_format") or {}
            if fmt.get("type") == "json_schema":
                # As a server with guided decoding (vLLM) would: an answer the schema accepts.
                schema = (fmt.get("json_schema") or {}).get("schema") or {}
                text = json.dumps(smallest_instance(schema, schema))
            if req.get("stream"):
                chunks = [{"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
                           "choices": [{"index": 0, "delta": {"content": f"part{i} "}, "finish_reason": None}]}
                          for i in range(STREAM_CHUNKS)]
                if (req.get("stream_options") or {}).get("include_usage"):
                    # As vLLM does: a last chunk with no choices and the whole usage.
                    chunks.append({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
                                   "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": STREAM_CHUNKS,
                                                            "total_tokens": 5 + STREAM_CHUNKS}})
                self._stream(chunks)
                return
            self._send(200, {"id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()),
                             "model": model, "server": name,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}})

        def _completion(self, req, model):
            if req.get("stream"):
                chunks = [{"id": "cmpl-mock", "object": "text_completion", "model": model,
                           "choices": [{"index": 0, "text": f"t{i}", "finish_reason": None}]}
                          for i in range(STREAM_CHUNKS)]
                if (req.get("stream_options") or {}).get("include_usage"):
                    # vLLM's /v1/completions ends the same way as its chat stream.
                    chunks.append({"id": "cmpl-mock", "object": "text_completion", "model": model,
                                   "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": STREAM_CHUNKS,
                                                            "total_tokens": 2 + STREAM_CHUNKS}})
                self._stream(chunks)
                return
            self._send(200, {"id": "cmpl-mock", "object": "text_completion", "created": int(time.time()),
                             "model": model, "server": name,
                             "choices": [{"index": 0, "text": "once upon a time", "finish_reason": "length"}],
                             "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}})

        def _stream(self, chunks):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()

            def write(data):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            for chunk in chunks:
                write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                time.sleep(STREAM_INTERVAL)
            write(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def start(port=0, name="mock", host="127.0.0.1"):
    """Start in a background thread; returns (server, recorder). server.server_port is the port."""
    recorder = Recorder()
    server = ThreadingHTTPServer((host, port), make_handler(name, recorder))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, recorder


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--name", default="demo")
    ap.add_argument("--host", default="127.0.0.1", help="0.0.0.0 only inside a container")
    args = ap.parse_args()
    srv, _ = start(args.port, args.name, args.host)
    print(f"mock OpenAI-compatible server '{args.name}' on {args.host}:{srv.server_port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
