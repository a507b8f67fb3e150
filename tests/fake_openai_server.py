"""A stand-in for vLLM's OpenAI-compatible server, for CPU tests: the same endpoints (`GET /v1/models`,
`POST /v1/chat/completions`) and answer fields, served by transformers' Blip2ForConditionalGeneration from an
exported directory with vLLM's BLIP-2 prompt placement: the exported chat template renders the messages, and the
processor puts the 32 `<image>` tokens before the text (docs/scaling.md, "What vLLM serves")."""
from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from PIL import Image


class FakeVLLM:
    def __init__(self, export_dir, name: str = "skingpt4"):
        from transformers import AutoProcessor, Blip2ForConditionalGeneration

        self.name, self.export_dir = name, export_dir
        self.model = Blip2ForConditionalGeneration.from_pretrained(str(export_dir)).eval()
        self.processor = AutoProcessor.from_pretrained(str(export_dir))
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def complete(self, body: dict) -> dict:
        self.requests.append(body)
        images, messages = [], []
        for message in body["messages"]:
            content = message["content"]
            if isinstance(content, list):  # vLLM's "string" content format: text parts joined, images aside
                texts = []
                for part in content:
                    if part["type"] == "image_url":
                        data = part["image_url"]["url"].split(",", 1)[1]
                        images.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
                    else:
                        texts.append(part["text"])
                content = "\n".join(texts)
            messages.append({"role": message["role"], "content": content})
        tokenizer = self.processor.tokenizer
        prompt = tokenizer.apply_chat_template(messages, tokenize=False)
        inputs = self.processor(images=images[0], text=prompt, return_tensors="pt",
                                add_special_tokens=body.get("add_special_tokens", False))
        greedy = body.get("temperature", 1.0) == 0
        kwargs = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=body["temperature"],
                                                             top_p=body.get("top_p", 1.0))
        if not greedy and "seed" in body:
            torch.manual_seed(body["seed"])
        with self.lock, torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=body.get("max_tokens", 16),
                                      pad_token_id=tokenizer.pad_token_id, **kwargs)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        finish, stop_reason = "length", None
        if tokenizer.eos_token_id in new:
            new, finish = new[: new.index(tokenizer.eos_token_id)], "stop"
        text = tokenizer.decode(new, skip_special_tokens=True)
        for stop in body.get("stop") or []:
            if stop in text:
                text, finish, stop_reason = text.split(stop, 1)[0], "stop", stop
        return {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish, "stop_reason": stop_reason}],
                "usage": {"prompt_tokens": int(inputs["input_ids"].shape[1]), "completion_tokens": len(new),
                          "total_tokens": int(inputs["input_ids"].shape[1]) + len(new)}}

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        """Start on 127.0.0.1 (a free port) in a daemon thread; returns (server, base URL)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": fake.name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                if body.get("model") != fake.name:
                    return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                self._send(200, fake.complete(body))

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/v1"
