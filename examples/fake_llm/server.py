"""A tiny deterministic OpenAI-compatible LLM server (stdlib only).

Used by promptwall-otel tests and examples so that real OpenTelemetry GenAI
instrumentations can be driven end-to-end without network access.

Run standalone::

    python examples/fake_llm/server.py --port 0
    # -> fake-llm listening on http://127.0.0.1:PORT

or in-process::

    from server import start_fake_llm
    server, base_url = start_fake_llm()
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0)
    ...
    server.shutdown()

Every response is a pure function of the request body, so tests can assert
exact ids, models, texts and token counts.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import re
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

CREATED = 1700000000
MODEL_SUFFIX = "-2024-07-18"
EMBEDDING_DIMS = 8
TOOL_CALL_ARGUMENTS = {"city": "Paris"}

_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


# --------------------------------------------------------------------------
# Pure helpers (importable by tests to compute expected values)
# --------------------------------------------------------------------------


def stable_hash(body: Any, n: int = 24) -> str:
    """Stable hex hash of a JSON-able object (key order independent)."""
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:n]


def response_model(model: str) -> str:
    """Model name reported in responses: request model + date suffix."""
    if not model:
        model = "gpt-4o-mini"
    if _DATE_SUFFIX.search(model):
        return model
    return model + MODEL_SUFFIX


def count_words(text: str) -> int:
    return len(text.split())


def content_text(content: Any) -> str:
    """Flatten OpenAI message content (str or list of parts) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: List[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
        return " ".join(parts)
    return str(content)


def prompt_tokens(messages: List[Dict[str, Any]]) -> int:
    return sum(count_words(content_text(m.get("content"))) for m in messages if isinstance(m, dict))


def _last_user_text(messages: List[Dict[str, Any]]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def chat_answer(messages: List[Dict[str, Any]]) -> str:
    """Deterministic assistant answer for a chat request."""
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return "Tool said: " + content_text(messages[-1].get("content"))
    return "Echo: " + _last_user_text(messages)


def wants_tool_call(body: Dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    if not tools or not messages:
        return False
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return False
    words = re.findall(r"[a-z]+", content_text(last.get("content")).lower())
    return "weather" in words


def _tool_name(tool: Dict[str, Any]) -> str:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if isinstance(fn, dict) and fn.get("name"):
        return str(fn["name"])
    if isinstance(tool, dict) and tool.get("name"):
        return str(tool["name"])
    return "tool"


def usage_block(p: int, c: int) -> Dict[str, Any]:
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def chat_completion(body: Dict[str, Any]) -> Dict[str, Any]:
    """Full non-streaming chat.completion object for a request body."""
    messages = body.get("messages") or []
    h = stable_hash(body)
    p = prompt_tokens(messages)
    if wants_tool_call(body):
        tool_call = {
            "id": "call_" + h[:16],
            "type": "function",
            "function": {
                "name": _tool_name(body["tools"][0]),
                "arguments": json.dumps(TOOL_CALL_ARGUMENTS),
            },
        }
        message: Dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [tool_call],
            "refusal": None,
        }
        finish = "tool_calls"
        c = count_words(tool_call["function"]["arguments"])
    else:
        answer = chat_answer(messages)
        message = {"role": "assistant", "content": answer, "refusal": None}
        finish = "stop"
        c = count_words(answer)
    return {
        "id": "chatcmpl-" + h,
        "object": "chat.completion",
        "created": CREATED,
        "model": response_model(body.get("model", "")),
        "system_fingerprint": "fp_fake",
        "service_tier": "default",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage_block(p, c),
    }


def chat_stream_chunks(body: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The list of chat.completion.chunk objects for a streaming request."""
    full = chat_completion(body)
    base = {
        "id": full["id"],
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": full["model"],
        "system_fingerprint": "fp_fake",
        "service_tier": "default",
    }
    msg = full["choices"][0]["message"]
    finish = full["choices"][0]["finish_reason"]
    chunks: List[Dict[str, Any]] = []

    def chunk(delta: Dict[str, Any], finish_reason: Optional[str] = None) -> Dict[str, Any]:
        c = dict(base)
        c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        return c

    if msg.get("tool_calls"):
        tc = msg["tool_calls"][0]
        chunks.append(chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": tc["id"], "type": "function",
             "function": {"name": tc["function"]["name"], "arguments": ""}}]}))
        chunks.append(chunk({"tool_calls": [
            {"index": 0, "function": {"arguments": tc["function"]["arguments"]}}]}))
    else:
        chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        words = msg["content"].split(" ")
        for i, w in enumerate(words):
            chunks.append(chunk({"content": w if i == 0 else " " + w}))
    chunks.append(chunk({}, finish))
    so = body.get("stream_options") or {}
    if isinstance(so, dict) and so.get("include_usage"):
        last = dict(base)
        last["choices"] = []
        last["usage"] = full["usage"]
        chunks.append(last)
    return chunks


def _embedding_inputs(inp: Any) -> List[str]:
    if isinstance(inp, str):
        return [inp]
    if isinstance(inp, list):
        if inp and all(isinstance(x, int) for x in inp):
            return [" ".join(str(x) for x in inp)]
        out = []
        for x in inp:
            if isinstance(x, list):
                out.append(" ".join(str(t) for t in x))
            else:
                out.append(str(x))
        return out
    return [str(inp)]


def embedding_vector(text: str, dims: int = EMBEDDING_DIMS) -> List[float]:
    """Deterministic vector; values are k/128 so they are exact in float32."""
    digest = b""
    counter = 0
    while len(digest) < dims:
        digest += hashlib.sha256(("%d:" % counter).encode("ascii") + text.encode("utf-8")).digest()
        counter += 1
    return [(digest[i] - 128) / 128.0 for i in range(dims)]


def encode_base64_vector(vec: List[float]) -> str:
    """What the real API sends for encoding_format=base64: little-endian float32."""
    return base64.b64encode(struct.pack("<%df" % len(vec), *vec)).decode("ascii")


def embeddings(body: Dict[str, Any]) -> Dict[str, Any]:
    texts = _embedding_inputs(body.get("input", ""))
    words = sum(count_words(t) for t in texts)
    model = body.get("model", "text-embedding-3-small")
    dims = int(body.get("dimensions") or EMBEDDING_DIMS)
    as_b64 = body.get("encoding_format") == "base64"
    data = []
    for i, t in enumerate(texts):
        vec = embedding_vector(t, dims)
        data.append({"object": "embedding", "index": i,
                     "embedding": encode_base64_vector(vec) if as_b64 else vec})
    return {
        "object": "list",
        "data": data,
        # Embedding models are reported unchanged (like the real API).
        "model": model,
        "usage": {"prompt_tokens": words, "total_tokens": words},
    }


def text_completion(body: Dict[str, Any]) -> Dict[str, Any]:
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = " ".join(str(p) for p in prompt)
    prompt = str(prompt)
    text = " Echo: " + prompt
    p = count_words(prompt)
    c = count_words(text)
    return {
        "id": "cmpl-" + stable_hash(body),
        "object": "text_completion",
        "created": CREATED,
        "model": response_model(body.get("model", "gpt-3.5-turbo-instruct")),
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


ERROR_MODELS: Dict[str, Tuple[int, str, str]] = {
    "error-400": (400, "invalid_request_error", "Fake bad request for model error-400"),
    "error-429": (429, "rate_limit_exceeded", "Fake rate limit for model error-429"),
    "error-500": (500, "server_error", "Fake server error for model error-500"),
}


def error_body(status: int, etype: str, message: str, code: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": code or etype}}


# --------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------


class FakeLLMHandler(BaseHTTPRequestHandler):
    server_version = "fake-llm/1.0"
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the client's delayed ACK adds ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet

    # -- helpers --
    def _send_json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", "req_fake")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, chunks: List[Dict[str, Any]]) -> None:
        payload = b"".join(
            b"data: " + json.dumps(c).encode("utf-8") + b"\n\n" for c in chunks
        ) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", "req_fake")
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> Optional[Dict[str, Any]]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    # -- verbs --
    def do_GET(self) -> None:  # noqa: N802
        path = self._path()
        if path in ("/health", "/healthz"):
            self._send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": CREATED, "owned_by": "fake"}]})
        else:
            self._not_found()

    def do_POST(self) -> None:  # noqa: N802
        path = self._path()
        routes = {
            "/v1/chat/completions": self._chat,
            "/v1/embeddings": self._embeddings,
            "/v1/completions": self._completions,
        }
        route = routes.get(path)
        if route is None:
            self._read_body()
            self._not_found()
            return
        body = self._read_body()
        if body is None:
            self._send_json(400, error_body(400, "invalid_request_error", "Body is not a JSON object"))
            return
        # Real providers never reuse a response id; salting with a call counter keeps
        # ids unique per call while staying reproducible for a fresh server.
        body["_fake_call"] = self.server.next_call()
        model = body.get("model")
        if isinstance(model, str) and model in ERROR_MODELS:
            status, etype, msg = ERROR_MODELS[model]
            headers = {"Retry-After": "0"} if status == 429 else None
            self._send_json(status, error_body(status, etype, msg), headers)
            return
        route(body)

    def _not_found(self) -> None:
        self._send_json(404, error_body(404, "not_found_error", "Unknown path: " + self.path, "not_found"))

    def _chat(self, body: Dict[str, Any]) -> None:
        if body.get("stream"):
            self._send_sse(chat_stream_chunks(body))
        else:
            self._send_json(200, chat_completion(body))

    def _embeddings(self, body: Dict[str, Any]) -> None:
        self._send_json(200, embeddings(body))

    def _completions(self, body: Dict[str, Any]) -> None:
        if body.get("stream"):
            full = text_completion(body)
            chunk = dict(full)
            chunk.pop("usage")
            chunks = [chunk]
            so = body.get("stream_options") or {}
            if isinstance(so, dict) and so.get("include_usage"):
                chunks.append({"id": full["id"], "object": "text_completion", "created": CREATED,
                               "model": full["model"], "choices": [], "usage": full["usage"]})
            self._send_sse(chunks)
        else:
            self._send_json(200, text_completion(body))


class FakeLLMServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._calls = itertools.count(1)
        self._calls_lock = threading.Lock()

    def next_call(self) -> int:
        with self._calls_lock:
            return next(self._calls)


def start_fake_llm(host: str = "127.0.0.1", port: int = 0) -> Tuple[FakeLLMServer, str]:
    """Start the server in a daemon thread. Returns (server, base_url).

    The openai client's base_url is ``base_url + "/v1"``.
    Stop with ``server.shutdown(); server.server_close()``.
    """
    server = FakeLLMServer((host, port), FakeLLMHandler)
    thread = threading.Thread(target=server.serve_forever, name="fake-llm", daemon=True)
    thread.start()
    actual_host, actual_port = server.server_address[:2]
    return server, "http://%s:%d" % (actual_host, actual_port)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Deterministic fake OpenAI-compatible server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = FakeLLMServer((args.host, args.port), FakeLLMHandler)
    host, port = server.server_address[:2]
    print("fake-llm listening on http://%s:%d" % (host, port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
