"""A TEST DOUBLE of a rate-limit service, for the integration tests only — never the product's
engine (production runs envoyproxy/ratelimit or Limitador; neither is installable here).

It speaks the real protocol, `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
over gRPC (grpcio, messages encoded by hand), reads an envoyproxy/ratelimit `config.yaml` (the
one `llm-gateway render --ratelimit-config` writes) and keeps its counters in a real Redis with
envoyproxy/ratelimit's fixed-window scheme (src/redis/fixed_cache_impl.go): per descriptor, one
pipeline of `INCRBY <domain>_<key>_<value>_<window start> hits` + `EXPIRE … unit`, the count
compared after the increment, windows aligned to the clock. A descriptor's own `limit` override
is honoured, as envoyproxy/ratelimit does. Redis errors answer gRPC UNAVAILABLE.

    python tests/ratelimit_double.py --port P --redis-port R --config config.yaml [--delay-ms D]

Prints `ready` once serving; every descriptor it has no limit for is logged (`unknown
descriptor …`), so a test can check the rendered config is complete.
"""

import argparse
import socket
import sys
import threading
import time
from concurrent import futures

import grpc
import yaml

METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 30 * 86400,
                "year": 365 * 86400, "week": 7 * 86400}
UNIT_ENUM = {1: "second", 2: "minute", 3: "hour", 4: "day", 5: "month", 6: "year", 7: "week"}
UNIT_NUMBER = {v: k for k, v in UNIT_ENUM.items()}
OK, OVER_LIMIT = 1, 2


# --- protobuf, by hand -------------------------------------------------------------------

def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf):
    i = 0
    while i < len(buf):
        tag, i = read_varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, value


def parse_request(buf):
    domain, descriptors, hits = "", [], 0
    for number, value in fields(buf):
        if number == 1:
            domain = value.decode()
        elif number == 2:
            entries, limit = [], None
            for n, v in fields(value):
                if n == 1:
                    entry = dict(fields(v))
                    entries.append((entry.get(1, b"").decode(), entry.get(2, b"").decode()))
                elif n == 2:
                    o = dict(fields(v))
                    limit = (o.get(1, 0), UNIT_ENUM.get(o.get(2, 0), "minute"))
            descriptors.append((entries, limit))
        elif number == 3:
            hits = value
    return domain, descriptors, hits


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def field_varint(number, v):
    return varint(number << 3) + varint(v)


def field_bytes(number, b):
    return varint((number << 3) | 2) + varint(len(b)) + b


def encode_response(overall, statuses):
    out = field_varint(1, overall)
    for code, limit, unit, remaining, reset_ms in statuses:
        s = field_varint(1, code)
        if limit is not None:
            s += field_bytes(2, field_varint(1, limit) + field_varint(2, UNIT_NUMBER[unit]))
        s += field_varint(3, remaining)
        s += field_bytes(4, field_varint(1, reset_ms // 1000) + field_varint(2, (reset_ms % 1000) * 1_000_000))
        out += field_bytes(2, s)
    return out


# --- Redis, by hand (RESP) ---------------------------------------------------------------

class Redis:
    def __init__(self, port):
        self.port = port
        self.local = threading.local()

    def _conn(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            conn = (sock, sock.makefile("rb"))
            self.local.conn = conn
        return conn

    def pipeline(self, commands):
        try:
            sock, reader = self._conn()
            payload = b"".join(self._encode(c) for c in commands)
            sock.sendall(payload)
            return [self._reply(reader) for _ in commands]
        except (OSError, ValueError):
            self.local.conn = None
            raise

    @staticmethod
    def _encode(command):
        parts = [str(p).encode() for p in command]
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    @staticmethod
    def _reply(reader):
        line = reader.readline()
        if not line:
            raise OSError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise ValueError(rest.decode())
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else reader.read(n + 2)[:-2]
        raise ValueError(f"unexpected reply {line!r}")


# --- the service -------------------------------------------------------------------------

def load_limits(path):
    """envoyproxy/ratelimit's config: {domain: descriptors tree}."""
    cfg = yaml.safe_load(open(path))
    return {cfg["domain"]: cfg.get("descriptors") or []}


def find_limit(tree, entries):
    """Walk the descriptor tree as envoyproxy/ratelimit does: each entry matches a node by key
    and value, else by key alone; the last node's rate_limit applies."""
    nodes, limit = tree, None
    for key, value in entries:
        match = next((n for n in nodes if n.get("key") == key and str(n.get("value")) == value), None)
        match = match or next((n for n in nodes if n.get("key") == key and "value" not in n), None)
        if match is None:
            return None
        limit = match.get("rate_limit")
        nodes = match.get("descriptors") or []
    if not limit:
        return None
    return limit["requests_per_unit"], limit["unit"].lower()


class Service:
    def __init__(self, limits, redis, delay_ms=0):
        self.limits = limits
        self.redis = redis
        self.delay_ms = delay_ms

    def should_rate_limit(self, request, context):
        if self.delay_ms:
            # A slow service, for the callers' timeout.
            time.sleep(self.delay_ms / 1000)
        domain, descriptors, hits = parse_request(request)
        hits = hits or 1
        now = time.time()
        plan, commands = [], []
        for entries, override in descriptors:
            limit = override or find_limit(self.limits.get(domain, []), entries)
            if limit is None:
                print(f"unknown descriptor {domain} {entries}", file=sys.stderr, flush=True)
                plan.append(None)
                continue
            per_unit, unit = limit
            seconds = UNIT_SECONDS[unit]
            window = int(now // seconds) * seconds
            key = "_".join([domain] + [f"{k}_{v}" for k, v in entries] + [str(window)])
            commands += [("INCRBY", key, hits), ("EXPIRE", key, seconds)]
            plan.append((per_unit, unit, window + seconds))
        try:
            replies = self.redis.pipeline(commands) if commands else []
        except (OSError, ValueError) as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {e}")
        statuses, overall, at = [], OK, 0
        for step in plan:
            if step is None:
                statuses.append((OK, None, "minute", 0, 0))
                continue
            per_unit, unit, ends = step
            count = replies[at]
            at += 2
            over = count > per_unit
            overall = OVER_LIMIT if over else overall
            reset_ms = max(0, int((ends - now) * 1000))
            statuses.append((OVER_LIMIT if over else OK, per_unit, unit, max(0, per_unit - count), reset_ms))
        return encode_response(overall, statuses)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--delay-ms", type=int, default=0)
    args = p.parse_args()
    service = Service(load_limits(args.config), Redis(args.redis_port), args.delay_ms)
    handler = grpc.method_handlers_generic_handler(
        "envoy.service.ratelimit.v3.RateLimitService",
        {"ShouldRateLimit": grpc.unary_unary_rpc_method_handler(service.should_rate_limit)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
