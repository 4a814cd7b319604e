"""A real Triton Inference Server (PyTriton) with three small Python models, for tests and the demo.

Models:
  echo         text_input (BYTES [1]) + optional max_tokens (INT32), temperature/top_p (FP32),
               seed (UINT64), exclude_input_in_output / stream / return_* (BOOL),
               sampling_parameters (BYTES, a JSON string) -> text_output, finish_reason,
               num_input_tokens, num_output_tokens.
  echo_stream  the same inputs, decoupled: one response per word (served by /generate_stream).
  embed        input_text (BYTES [-1]) -> embeddings (FP32 [-1, 4]).

`echo_stream` answers once unless its `stream` input is true, as vLLM's backend does; a prompt
containing "explode" fails after two streamed words, "explode-now" fails at once.

The text models answer "prompt #<sha256[:12] of the prompt> has <n> chars . the answer is 42 ."
cut to max_tokens words, so a test can check exactly which prompt arrived. They check what
they receive: a missing max_tokens, sampling_parameters that disagree with max_tokens, or a
request parameter holding an array make the model fail (500), and the prompt is echoed in
front of the answer unless exclude_input_in_output is true, as real LLM backends do.

Run: python3 triton_server.py --http-port 8000 --grpc-port 8101 --metrics-port 8102
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import time

# Triton's Python backend stub must load this interpreter's libpython, not the system one.
os.environ["LD_LIBRARY_PATH"] = sysconfig.get_config_var("LIBDIR") + ":" + os.environ.get("LD_LIBRARY_PATH", "")
_OWN_HOME = "PYTRITON_HOME" not in os.environ
if _OWN_HOME:
    os.environ["PYTRITON_HOME"] = tempfile.mkdtemp(prefix="pytriton-")

import numpy as np  # noqa: E402
from pytriton.model_config import ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402

STREAM_INTERVAL = 0.2


def _scalar(request, name, default=None):
    value = request.data.get(name) if hasattr(request, "data") else None
    if value is None:
        return default
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise ValueError(f"input {name} must hold exactly one element, got shape {np.asarray(value).shape}")
    item = flat[0]
    return item.decode("utf-8") if isinstance(item, bytes) else item.item()


def _answer(request):
    for key, value in (request.parameters or {}).items():
        if isinstance(value, (list, dict)):
            raise ValueError(f"request parameter {key} is not a scalar")
    prompt = _scalar(request, "text_input")
    if not prompt:
        raise ValueError("text_input is missing or empty")
    if "explode-now" in prompt:
        raise RuntimeError("the model exploded")
    max_tokens = _scalar(request, "max_tokens")
    if max_tokens is None:
        raise ValueError("max_tokens is missing")
    sampling = _scalar(request, "sampling_parameters")
    if sampling is not None:
        params = json.loads(sampling)
        if params.get("max_tokens") != max_tokens:
            raise ValueError(f"sampling_parameters.max_tokens {params.get('max_tokens')} != {max_tokens}")
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
    words = f"prompt #{digest} has {len(prompt)} chars . the answer is 42 .".split(" ")
    finish = "stop"
    if len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
    echo = not bool(_scalar(request, "exclude_input_in_output", False))
    return prompt, words, finish, echo


def _outputs(text, finish, n_in, n_out):
    return {
        "text_output": np.array([text.encode()], dtype=np.bytes_),
        "finish_reason": np.array([finish.encode()], dtype=np.bytes_),
        "num_input_tokens": np.array([n_in], dtype=np.uint32),
        "num_output_tokens": np.array([n_out], dtype=np.uint32),
    }


def echo(requests):
    responses = []
    for request in requests:
        prompt, words, finish, echo_prompt = _answer(request)
        text = " ".join(words)
        if echo_prompt:
            text = prompt + text
        responses.append(_outputs(text, finish, len(prompt.split()), len(words)))
    return responses


def echo_stream(requests):
    """Like vLLM's backend: one response per word when `stream` is true, else exactly one."""
    for request in requests:
        prompt, words, finish, echo_prompt = _answer(request)
        if not _scalar(request, "stream", False):
            text = " ".join(words)
            yield [_outputs(prompt + text if echo_prompt else text, finish, len(prompt.split()), len(words))]
            continue
        if echo_prompt:
            yield [_outputs(prompt, "", len(prompt.split()), 0)]
        for i, word in enumerate(words):
            if i == 2 and "explode" in prompt:
                raise RuntimeError("the model exploded mid-stream")
            last = i == len(words) - 1
            time.sleep(STREAM_INTERVAL)
            yield [_outputs(word if last else word + " ", finish if last else "", len(prompt.split()), 1)]


def embed(requests):
    responses = []
    for request in requests:
        texts = [t.decode("utf-8") for t in np.asarray(request.data["input_text"]).reshape(-1)]
        rows = [[float(len(t)), float(t.count(" ")), 1.0, -0.5] for t in texts]
        responses.append({"embeddings": np.array(rows, dtype=np.float32).reshape(len(texts), 4)})
    return responses


TEXT_INPUTS = [
    Tensor(name="text_input", dtype=np.bytes_, shape=(1,)),
    Tensor(name="max_tokens", dtype=np.int32, shape=(1,), optional=True),
    Tensor(name="temperature", dtype=np.float32, shape=(1,), optional=True),
    Tensor(name="top_p", dtype=np.float32, shape=(1,), optional=True),
    Tensor(name="seed", dtype=np.uint64, shape=(1,), optional=True),
    Tensor(name="stream", dtype=np.bool_, shape=(1,), optional=True),
    Tensor(name="exclude_input_in_output", dtype=np.bool_, shape=(1,), optional=True),
    Tensor(name="return_finish_reason", dtype=np.bool_, shape=(1,), optional=True),
    Tensor(name="return_num_input_tokens", dtype=np.bool_, shape=(1,), optional=True),
    Tensor(name="return_num_output_tokens", dtype=np.bool_, shape=(1,), optional=True),
    Tensor(name="sampling_parameters", dtype=np.bytes_, shape=(1,), optional=True),
]
TEXT_OUTPUTS = [
    Tensor(name="text_output", dtype=np.bytes_, shape=(1,)),
    Tensor(name="finish_reason", dtype=np.bytes_, shape=(1,)),
    Tensor(name="num_input_tokens", dtype=np.uint32, shape=(1,)),
    Tensor(name="num_output_tokens", dtype=np.uint32, shape=(1,)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8101)
    ap.add_argument("--metrics-port", type=int, default=8102)
    ap.add_argument("--host", default="127.0.0.1", help="0.0.0.0 only inside a container")
    args = ap.parse_args()
    config = TritonConfig(
        http_address=args.host, http_port=args.http_port,
        grpc_address=args.host, grpc_port=args.grpc_port,
        metrics_address=args.host, metrics_port=args.metrics_port,
        log_verbose=0,
    )

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with Triton(config=config) as triton:
        triton.bind(model_name="echo", infer_func=echo, inputs=TEXT_INPUTS, outputs=TEXT_OUTPUTS,
                    config=ModelConfig(batching=False), strict=True)
        triton.bind(model_name="echo_stream", infer_func=echo_stream, inputs=TEXT_INPUTS, outputs=TEXT_OUTPUTS,
                    config=ModelConfig(batching=False, decoupled=True), strict=True)
        triton.bind(model_name="embed", infer_func=embed,
                    inputs=[Tensor(name="input_text", dtype=np.bytes_, shape=(-1,))],
                    outputs=[Tensor(name="embeddings", dtype=np.float32, shape=(-1, 4))],
                    config=ModelConfig(batching=False), strict=True)
        print(f"triton serving on {args.host}:{args.http_port}", flush=True)
        try:
            triton.serve()
        except KeyboardInterrupt:
            pass
    if _OWN_HOME:
        shutil.rmtree(os.environ["PYTRITON_HOME"], ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
