"""The chat engine against a served LLM (docs/scaling.md, "Serving with vLLM"): the exact local prompt, computed here.

The client side of a `--target vllm` export (`skingpt4_client.safetensors`: EVA-ViT + ln_vision, Q-Former, query
tokens, projection and the LLM's input embedding table) is rebuilt as a `SkinGPT4` whose LLM is only that
embedding table. `RemoteChatEngine` is a `ChatEngine`: it encodes the photo, renders and lays out every turn
with the same `_prepare` (the project's layout function, history, context-limit rule) and embeds it with the same
`SkinGPT4.embed`, so the `[text | image | text]` tensor it sends is the local engine's `inputs_embeds`. The server
(vLLM with `--enable-prompt-embeds`, `/v1/completions`) runs the LLM on it and returns the generated token ids,
which `_finish` turns into the reply exactly as locally. Every turn sends the whole conversation (no KV cache
here; vLLM's prefix cache reuses what it can).
"""
from __future__ import annotations

import base64
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from skingpt4.chat.decoding import DecodingConfig
from skingpt4.chat.engine import ChatEngine, Conversation, TurnReport, _Turn
from skingpt4.chat.http_client import ServerAddress, ServerError, StrictClient, one_line
from skingpt4.common.config import ConfigError

log = logging.getLogger("skingpt4.chat")
IDENTITY_KEYS = ("variant", "llm_model", "chat_template", "checkpoint", "checkpoint_name", "checkpoint_sha256",
                 "model_config_sha256", "projection_sha256", "synthetic")
START_HINT = "start it with the serve_command of the export's skingpt4_export.json (docs/scaling.md)"


class EmbeddingsOnlyLLM(nn.Module):
    """The served LLM's input embedding table and config: all of the LLM the client needs."""

    def __init__(self, config, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def forward(self, *args, **kwargs):
        raise RuntimeError("the client holds only the LLM's embedding table; the server runs the LLM")


def read_vllm_export(directory: str | Path) -> dict:
    from skingpt4.export.blip2 import read_export_info

    try:
        info = read_export_info(directory)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--export-dir '{directory}': skingpt4_export.json is not valid JSON ({err})") from None
    if not isinstance(info, dict) or info.get("target") != "vllm" or "served_model_name" not in info:
        raise ConfigError(f"--export-dir '{directory}' is not a --target vllm export; make one with python -m "
                          "skingpt4.export --cfg-path ... --target vllm --out DIR")
    return info


def load_client_model(directory: str | Path, device: Optional[str] = None):
    """The client-side SkinGPT4 of a `--target vllm` export (module docstring) and its manifest."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from skingpt4.common import registry
    from skingpt4.export.blip2 import check_finite
    from skingpt4.export.vllm import CLIENT_FILE, EMBEDDING_KEY
    from skingpt4.models.build import model_config
    from skingpt4.models.llm import load_tokenizer
    from skingpt4.models.skin_gpt4 import SkinGPT4

    root = Path(directory)
    info = read_vllm_export(root)
    user = dict(info["model_config"])
    user["lora"] = {"r": 0}  # merged into the served weights; the client has no LLM layers
    user["llm_quantization"] = "none"
    if device is not None:
        user["device"] = device
    cfg = model_config(user)
    llm_dir = root / info.get("llm_dir", "llm")
    tokenizer = load_tokenizer(str(llm_dir), cfg.tokenizer.pad_token, key="--export-dir")
    config = AutoConfig.from_pretrained(str(llm_dir), local_files_only=True)
    client_file = root / info.get("client_file", CLIENT_FILE)
    try:
        state = load_file(str(client_file))
    except Exception as err:  # a missing or torn safetensors file (SafetensorError, OSError)
        raise ConfigError(f"--export-dir '{directory}': cannot read {client_file.name} ({one_line(err, 120)})") from None
    embedding = state.pop(EMBEDDING_KEY, None)
    if embedding is None or embedding.shape != (config.vocab_size, config.hidden_size):
        raise ConfigError(f"--export-dir '{directory}': {client_file.name} has no input embedding table of the "
                          f"served LLM's shape [{config.vocab_size}, {config.hidden_size}]")
    llm = EmbeddingsOnlyLLM(config, nn.Embedding(config.vocab_size, config.hidden_size))
    model = SkinGPT4(cfg, registry.chat_templates.get(cfg.template), tokenizer, llm)
    state["llm.embed_tokens.weight"] = embedding
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"--export-dir '{directory}': {client_file.name} does not fit the model of its manifest "
                          f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    llm.to(model.device, model.llm_dtype)
    model.place()
    check_finite(model)
    identity = info["model"]  # what the export recorded (its checkpoint need not be on this machine)
    model.exported_identity = {key: identity.get(key) for key in IDENTITY_KEYS}
    return model, info


def build_remote_engine(server: str, export_dir: str | Path, run, device: Optional[str] = None,
                        timeout: float = 600.0) -> "RemoteChatEngine":
    """The demo's engine builder for `--server`: the chat run settings of its config, the served LLM."""
    return RemoteChatEngine.from_export(export_dir, server, device=device or "cpu", timeout=timeout,
                                        max_question_chars=run.max_question_chars)


def encode_prompt_embeds(embeds: torch.Tensor) -> str:
    """[T, H] -> what vLLM's `prompt_embeds` takes: base64 of `torch.save(tensor)` (a copy: a saved view would
    carry its whole storage)."""
    buffer = io.BytesIO()
    torch.save(embeds.detach().to("cpu").contiguous().clone(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def sampling_fields(decoding: DecodingConfig) -> dict:
    """DecodingConfig -> vLLM completion parameters (greedy = temperature 0)."""
    if decoding.num_beams > 1:
        raise ConfigError("beam search is not served with prompt embeddings; use greedy decoding or sampling")
    fields = {"repetition_penalty": decoding.repetition_penalty}
    if decoding.do_sample:
        fields.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k or -1)
    else:
        fields.update(temperature=0.0)
    if decoding.seed is not None:
        fields["seed"] = decoding.seed
    return fields


class RemoteChatEngine(ChatEngine):
    """A ChatEngine whose LLM runs on a server (module docstring). `concurrency`: requests in flight at once
    in `ask_batch` (one per conversation)."""

    def __init__(self, model, info: dict, server: str, timeout: float = 600.0, concurrency: int = 8,
                 max_question_chars: int = 4000):
        super().__init__(model, max_question_chars=max_question_chars)
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
        self.address = ServerAddress.parse(server)
        self.client = StrictClient(self.address, timeout, start_hint=START_HINT)
        self.info = info
        self.served_model = info["served_model_name"]
        self.identity = dict(info["model"])
        self.concurrency = concurrency
        self.vocab_size = int(model.llm.config.vocab_size)

    @classmethod
    def from_export(cls, export_dir: str | Path, server: str, device: Optional[str] = None, check: bool = True,
                    **kwargs) -> "RemoteChatEngine":
        ServerAddress.parse(server)  # a bad address is reported before the (seconds-long) model load
        model, info = load_client_model(export_dir, device)
        engine = cls(model, info, server, **kwargs)
        if check:
            engine.check_server()
        return engine

    def check_server(self) -> None:
        """The server must serve this export: its /v1/models lists the export's served model name."""
        listing = self.client.get("/models")
        data = listing.get("data")
        ids = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else None
        if ids is None:
            raise ServerError(f"the server at {self.address.url}/models answered without a model list")
        if self.served_model not in ids:
            served = ", ".join(one_line(str(i), 60) for i in ids[:3]) or "nothing"
            raise ServerError(f"the server at {self.address.url} serves {served}, not this export "
                              f"({self.served_model}); {START_HINT}")

    # ------------------------------------------------------------------------------------------ asking
    def ask(self, conv: Conversation, question: str, decoding: Optional[DecodingConfig] = None,
            streamer=None) -> str:
        turn = self._prepare(conv, question, decoding or DecodingConfig(), use_cache=False)
        return self._complete(turn, self._request(turn))

    def ask_stream(self, conv: Conversation, question: str,
                   decoding: Optional[DecodingConfig] = None) -> Iterator[str]:
        """The whole reply at once (the served path does not stream)."""
        yield self.ask(conv, question, decoding)

    def ask_batch(self, convs: Sequence[Conversation], questions: Sequence[str],
                  decoding: Optional[DecodingConfig] = None, streamer=None) -> list[str]:
        """One request per conversation, at most `concurrency` in flight (the server batches them)."""
        if len(convs) != len(questions):
            raise ValueError(f"{len(convs)} conversations but {len(questions)} questions")
        if len({id(c) for c in convs}) != len(convs):
            raise ValueError("a conversation appears twice in one batch")
        decoding = decoding or DecodingConfig()
        turns = [self._prepare(c, q, decoding, use_cache=False) for c, q in zip(convs, questions)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(turns)) or 1) as pool:
            replies = list(pool.map(self._request, turns))
        return [self._complete(turn, reply) for turn, reply in zip(turns, replies)]

    def request_body(self, turn: _Turn) -> dict:
        """What goes over the wire for one turn: the exact prompt embeddings [T, H] and the decoding."""
        return {"model": self.served_model, "prompt_embeds": encode_prompt_embeds(turn.embeds[0]),
                "max_tokens": turn.max_new_tokens, "stop": list(self.template.stop_strings) or None,
                "return_token_ids": True, "skip_special_tokens": True, **sampling_fields(turn.decoding)}

    def _request(self, turn: _Turn) -> dict:
        return self.client.post("/completions", self.request_body(turn))

    def _complete(self, turn: _Turn, reply: dict) -> str:
        where = f"the server at {self.address.url}/completions"
        choices = reply.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict) or not isinstance(choice.get("text"), str):
            raise ServerError(f"{where} answered without choices[0].text: {one_line(json.dumps(reply)[:200])}")
        ids = choice.get("token_ids")
        if ids is not None:
            if not (isinstance(ids, list) and all(type(i) is int and 0 <= i < self.vocab_size for i in ids)):
                raise ServerError(f"{where} answered with token_ids that are not ids of the served vocabulary")
            if len(ids) > turn.max_new_tokens:
                raise ServerError(f"{where} answered {len(ids)} tokens, more than the {turn.max_new_tokens} asked")
            return self._finish(turn, ids)  # exactly the local engine's ending: decode, clean, stopped_by
        return self._finish_text(turn, choice, reply.get("usage"))

    def _finish_text(self, turn: _Turn, choice: dict, usage) -> str:
        """A server that returns text only (no token_ids): vLLM's finish_reason / stop_reason say how it ended."""
        conv = turn.conv
        reply = self.template.clean_reply(choice["text"])
        if choice.get("finish_reason") == "length":
            stopped_by = "max_new_tokens"
        else:
            stopped_by = "stop_string" if isinstance(choice.get("stop_reason"), str) else "eos"
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        tokens = tokens if type(tokens) is int and tokens >= 0 else 0
        newly_dropped = turn.first_kept - conv.first_kept
        conv.history.append((turn.question, reply))
        conv.first_kept = turn.first_kept
        conv.last_turn = TurnReport(prompt_tokens=len(turn.tokens), reused_tokens=0, new_tokens=tokens,
                                    max_new_tokens=turn.max_new_tokens, dropped_turns=turn.first_kept,
                                    newly_dropped=newly_dropped, stopped_by=stopped_by)
        return reply
