"""Stand-ins for vLLM's OpenAI-compatible server, for CPU tests.

`FakePromptEmbedsServer`: what `vllm serve DIR/llm --enable-prompt-embeds --served-model-name NAME` answers, from
a `--target vllm` export: `GET /v1/models`, and `POST /v1/completions` with `prompt_embeds` (base64 of
`torch.save(tensor [T, H])`, read back with `torch.load(weights_only=True)` as vLLM does) run by transformers'
AutoModelForCausalLM from DIR/llm: greedy or seeded sampling, `max_tokens`, EOS, `stop` strings (the text cut
before the stop string, the token ids kept, as vLLM does), `return_token_ids`. It never sees the image or the
prompt text: only the client's embeddings.

`HostileServer`: a raw socket server that answers every request with given bytes, optionally trickled, for the
strict client's tests.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class FakePromptEmbedsServer:
    def __init__(self, export_dir, name: str | None = None, delay: float = 0.0):
        from transformers import AutoModelForCausalLM, AutoTokenizer, StopStringCriteria

        info = json.loads((export_dir / "skingpt4_export.json").read_text())
        self.name = name or info["served_model_name"]
        self.export_dir = export_dir
        llm_dir = export_dir / info["llm_dir"]
        self.model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
        self.stop_criteria = StopStringCriteria
        self.requests: list[dict] = []
        self.generated: list[list[int]] = []
        self.lock = threading.Lock()
        self.delay = delay  # seconds per request, to make concurrency visible in the benchmark

    def complete(self, body: dict) -> tuple[int, dict]:
        from transformers import StoppingCriteriaList

        self.requests.append(body)
        raw = base64.b64decode(body["prompt_embeds"], validate=True)
        embeds = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
        if embeds.dim() == 3:
            embeds = embeds.squeeze(0)
        if embeds.dim() != 2 or embeds.shape[1] != self.model.config.hidden_size:
            return 400, {"error": {"message": f"prompt_embeds of shape {tuple(embeds.shape)}"}}
        greedy = body.get("temperature", 1.0) == 0
        kwargs = dict(do_sample=False, temperature=None, top_p=None, top_k=None) if greedy else dict(
            do_sample=True, temperature=body["temperature"], top_p=body.get("top_p", 1.0),
            top_k=max(body.get("top_k", -1), 0) or None)
        stops = [s for s in (body.get("stop") or []) if s]
        criteria = StoppingCriteriaList([self.stop_criteria(self.tokenizer, stops)] if stops else [])
        started = time.perf_counter()
        with self.lock, torch.no_grad():
            if not greedy and "seed" in body:
                torch.manual_seed(body["seed"])
            out = self.model.generate(inputs_embeds=embeds[None].to(torch.float32),
                                      attention_mask=torch.ones(1, embeds.shape[0], dtype=torch.long),
                                      max_new_tokens=body.get("max_tokens", 16), stopping_criteria=criteria,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                                      repetition_penalty=body.get("repetition_penalty", 1.0), **kwargs)
        if self.delay:
            time.sleep(max(0.0, self.delay - (time.perf_counter() - started)))
        ids = out[0].tolist()
        self.generated.append(ids)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        finish, stop_reason = ("stop" if self.tokenizer.eos_token_id in ids else "length"), None
        for stop in stops:
            if stop in text:
                text, finish, stop_reason = text.split(stop, 1)[0], "stop", stop
        choice = {"index": 0, "text": text, "finish_reason": finish, "stop_reason": stop_reason, "logprobs": None}
        if body.get("return_token_ids"):
            choice["token_ids"] = ids
        return 200, {"id": f"cmpl-{len(self.requests)}", "object": "text_completion", "model": self.name,
                     "choices": [choice], "usage": {"prompt_tokens": int(embeds.shape[0]),
                                                    "completion_tokens": len(ids),
                                                    "total_tokens": int(embeds.shape[0]) + len(ids)}}

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        """Start on 127.0.0.1 (a free port) in a daemon thread; returns (server, base URL)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": fake.name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                if body.get("model") != fake.name:
                    return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                self._send(*fake.complete(body))

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


class HostileServer:
    """Answers every connection with `response` (bytes), `trickle` seconds between bytes (0: all at once), then
    closes; `connections` counts who came."""

    def __init__(self, response: bytes, trickle: float = 0.0):
        self.response, self.trickle, self.connections = response, trickle, 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket):
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:  # the request head; the body (if any) is not needed
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            if self.trickle:
                for i in range(len(self.response)):
                    if self._stop.is_set():
                        break
                    conn.sendall(self.response[i:i + 1])
                    time.sleep(self.trickle)
            else:
                conn.sendall(self.response)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self._stop.set()
        self.sock.close()


def http_response(body: bytes, status: str = "200 OK", headers: dict | None = None, length: int | None = None) -> bytes:
    head = {"Content-Type": "application/json", "Content-Length": str(len(body) if length is None else length),
            "Connection": "close", **(headers or {})}
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode() + body
