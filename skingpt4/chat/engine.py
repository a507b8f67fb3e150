"""Multi-turn chat about one skin photo (docs/inference.md).

Per conversation the image is encoded once; every question re-renders the conversation with the model's chat
template (exactly the text the original demo feeds the LLM), lays it out as
[BOS | text before <ImageHere> | 32 image embeddings | text after] with the same layout function and embedding
as training (`SkinGPT4.layout`, `SkinGPT4.embed`) and generates the reply with transformers' `generate`
(greedy, sampling or beam search).

KV-cache reuse: the conversation keeps the LLM's key/value cache together with the token list it holds
(image positions marked `IMAGE_SLOT`). A new question's token list shares a long prefix with it -- everything
up to the previous reply, usually into it -- so the cache is cropped to that common prefix and only the rest
is run. Turn N's prefill therefore costs about what turn 1's costs; the tokens are the same as re-running the
history (tests/test_chat_engine.py checks both). `ask_batch` does the same for several conversations at once,
their caches left-padded into one batch cache.

Decoding speed options (docs/performance.md): `kv_cache="static"` runs generate on preallocated static buffers
(chat/static_cache.py), which `compile_decoding=True` lets torch.compile (CUDA graphs on a GPU) replay; greedy
tokens are the same. `streamer` (ask, ask_batch) receives the token ids as they are generated.

Context length: prompt + `max_new_tokens` must fit `min(max_length, LLM context)`. When it does not, the
oldest turns are left out until a quarter of that budget is free (never the image, which always goes with the
first kept question) and the turn report says so; a question that does not fit even alone is a
`ChatInputError`.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList, StopStringCriteria
from transformers.generation.streamers import BaseStreamer

from skingpt4.chat.decoding import DecodingConfig
from skingpt4.chat.static_cache import KV_CACHES, StaticBuffers
from skingpt4.common import registry
from skingpt4.common.images import ImageSource, load_image
from skingpt4.prompting import IMAGE_PLACEHOLDER

log = logging.getLogger("skingpt4.chat")


class ChatInputError(ValueError):
    """A question the engine cannot take; the message is written for the person chatting."""


@dataclass
class TurnReport:
    """What the last question cost and how it ended."""

    prompt_tokens: int        # image positions included
    reused_tokens: int        # prompt positions served from the KV cache of earlier turns
    new_tokens: int
    max_new_tokens: int       # the budget actually used (smaller than asked when the context is nearly full)
    dropped_turns: int        # earlier turns left out of the prompt to fit the context (0: whole history)
    newly_dropped: int        # of those, how many were dropped by this question
    stopped_by: str           # "stop_string" | "eos" | "max_new_tokens" | "cancelled"
    reply_ids: list[int] = field(default_factory=list)  # the generated token ids, stop tokens included


@dataclass
class Conversation:
    """One chat about one image. Make it with `ChatEngine.new_conversation`."""

    image_embeds: torch.Tensor                                   # [1, 32, H], in the LLM's dtype
    history: list[tuple[str, str]] = field(default_factory=list)  # (question, cleaned reply), all turns
    first_kept: int = 0                                           # history[first_kept:] is in the prompt
    cache: Optional[DynamicCache] = None
    cached_tokens: list[int] = field(default_factory=list)       # what `cache` holds, position by position
    last_turn: Optional[TurnReport] = None


@dataclass
class _Turn:
    """A question made ready for generation."""

    conv: Conversation
    question: str
    decoding: DecodingConfig
    tokens: list[int]
    embeds: torch.Tensor      # [1, T, H]
    reused: int
    max_new_tokens: int
    first_kept: int


class ChatEngine:
    def __init__(self, model, max_question_chars: int = 4000, kv_cache: str = "dynamic",
                 compile_decoding: bool = False, compile_backend: str = "inductor"):
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache={kv_cache!r}: choose one of {', '.join(KV_CACHES)}")
        if compile_decoding and kv_cache != "static":
            raise ValueError("compile_decoding needs kv_cache='static' (compiled steps need fixed shapes)")
        self.model = model
        self.kv_cache = kv_cache
        self._static = StaticBuffers(model.llm, compile_decoding, compile_backend) if kv_cache == "static" else None
        self.template = model.template  # the variant's: the same format the model was trained on
        self.tokenizer = model.tokenizer
        self.max_question_chars = max_question_chars
        self.context_limit = model.llm.config.max_position_embeddings
        self.image_processor = registry.processors.get("blip2_image_eval")(image_size=model.cfg.vision.image_size)
        # StopStringCriteria matches a stop string however the tokenizer splits it (Llama: "###" is [835]
        # or [2277, 29937]); it preprocesses the vocabulary once, so it is built once.
        self._stop_strings = (StopStringCriteria(self.tokenizer, list(self.template.stop_strings))
                              if self.template.stop_strings else None)

    # ----------------------------------------------------------------------------------- conversations
    @torch.no_grad()
    def new_conversation(self, image: ImageSource | torch.Tensor) -> Conversation:
        """Encode the image (a path, bytes, PIL image or a processed tensor [3,S,S] / [1,3,S,S]) once."""
        if isinstance(image, torch.Tensor):
            pixels = image if image.dim() == 4 else image.unsqueeze(0)
            if pixels.shape[0] != 1 or pixels.shape[1] != 3:
                raise ValueError(f"expected one processed image [3,S,S] or [1,3,S,S], got {tuple(image.shape)}")
        else:
            pixels = self.image_processor(load_image(image)).unsqueeze(0)
        return Conversation(image_embeds=self.model.encode_image(pixels))

    def prompt_text(self, conv: Conversation, question: str) -> str:
        """The text the LLM reads for `question` (image as `<ImageHere>`), for display and debugging."""
        return self.template.render(conv.history[conv.first_kept:], question)

    # ----------------------------------------------------------------------------------- asking
    @torch.no_grad()
    def ask(self, conv: Conversation, question: str, decoding: Optional[DecodingConfig] = None,
            streamer: Optional[BaseStreamer] = None) -> str:
        turn = self._prepare(conv, question, decoding or DecodingConfig(), use_cache=True)
        return self._finish(turn, self._generate(turn, conv.cache, streamer))

    def ask_stream(self, conv: Conversation, question: str,
                   decoding: Optional[DecodingConfig] = None) -> Iterator[str]:
        """Yield the cleaned reply so far as it grows; the last value equals what `ask` returns.
        Closing the iterator early stops generation and keeps the partial reply in the history."""
        turn = self._prepare(conv, question, decoding or DecodingConfig(), use_cache=True)
        if turn.decoding.num_beams > 1:  # transformers streams greedy and sampling only
            yield self._finish(turn, self._generate(turn, conv.cache))
            return
        streamer, cancel, result = _TokenQueue(), threading.Event(), {}

        def work():
            try:
                with torch.no_grad():
                    result["ids"] = self._generate(turn, conv.cache, streamer, cancel)
            except BaseException as err:  # handed to the caller's thread below
                result["error"] = err
                streamer.end()

        worker = threading.Thread(target=work, name="skingpt4-generate", daemon=True)
        worker.start()
        ids, shown, reply, read_all = [], None, None, False
        try:
            for new_ids in streamer:
                ids.extend(new_ids)
                text = self.template.clean_reply(self._decode(ids))
                if text != shown:
                    shown = text
                    yield text
            read_all = True
        finally:
            cancel.set()
            worker.join()
            if "ids" in result:
                reply = self._finish(turn, result["ids"], cancelled=not read_all)
        if "error" in result:
            raise result["error"]
        if reply != shown:
            yield reply

    @torch.no_grad()
    def ask_batch(self, convs: Sequence[Conversation], questions: Sequence[str],
                  decoding: Optional[DecodingConfig] = None, streamer: Optional[BaseStreamer] = None) -> list[str]:
        """One question to each of several conversations in one left-padded batch (for evaluation).

        Each row reuses its conversation's KV cache: the caches are left-padded into one batch cache and only
        the last `window` positions run (the longest uncached part of any row; shorter rows re-run a few cached
        positions). Afterwards each conversation gets its row of the cache back. Beam search runs without it."""
        if len(convs) != len(questions):
            raise ValueError(f"{len(convs)} conversations but {len(questions)} questions")
        if len({id(c) for c in convs}) != len(convs):
            raise ValueError("a conversation appears twice in one batch")
        decoding = decoding or DecodingConfig()
        reuse = decoding.num_beams == 1
        turns = [self._prepare(c, q, decoding, use_cache=reuse) for c, q in zip(convs, questions)]
        lengths = [len(t.tokens) for t in turns]
        width = max(lengths)
        hidden = turns[0].embeds.shape[2]
        embeds = torch.zeros(len(turns), width, hidden, dtype=turns[0].embeds.dtype, device=self.model.device)
        mask = torch.zeros(len(turns), width, dtype=torch.long, device=self.model.device)
        for row, (turn, length) in enumerate(zip(turns, lengths)):
            embeds[row, width - length:] = turn.embeds[0]
            mask[row, width - length:] = 1
        cache = None
        if reuse:
            window = max(length - turn.reused for turn, length in zip(turns, lengths))
            cache = _left_padded_cache([t.conv.cache for t in turns], [n - window for n in lengths], width - window)
        out, cache = self._run_generate(embeds, mask, cache, decoding, min(t.max_new_tokens for t in turns),
                                        streamer, None)
        replies = []
        for row, (turn, length, ids) in enumerate(zip(turns, lengths, out.tolist())):
            while ids and ids[-1] == self.tokenizer.pad_token_id:  # rows that finished early are padded
                ids.pop()
            if cache is None:
                turn.conv.cache, turn.conv.cached_tokens = None, []
            else:  # the row's own positions: its tokens, then what it generated before it finished
                start = width - length
                keep = min(length + len(ids), cache.get_seq_length() - start)
                turn.conv.cache = DynamicCache(ddp_cache_data=[
                    (layer.keys[row:row + 1, :, start:start + keep].clone(),
                     layer.values[row:row + 1, :, start:start + keep].clone()) for layer in cache.layers])
            replies.append(self._finish(turn, ids))
        return replies

    # ----------------------------------------------------------------------------------- internals
    def _prepare(self, conv: Conversation, question: str, decoding: DecodingConfig, use_cache: bool) -> _Turn:
        decoding.validate()
        question = self._check_question(question)
        limit = min(decoding.max_length, self.context_limit)
        first_kept = conv.first_kept
        tokens = self._prompt_tokens(conv.history[first_kept:], question)
        if len(tokens) + decoding.max_new_tokens > limit:
            # Leave out the oldest turns (the image moves to the first kept question) until a quarter of the
            # budget is free again: dropping just enough would change the prompt after the image, and so
            # invalidate the KV cache, on every later turn.
            target = limit - limit // 4
            while len(tokens) + decoding.max_new_tokens > target and first_kept < len(conv.history):
                first_kept += 1
                tokens = self._prompt_tokens(conv.history[first_kept:], question)
        if len(tokens) >= limit:
            raise ChatInputError(
                f"The message is too long: with the image it takes {len(tokens)} tokens and the model can read "
                f"at most {limit - 1} before answering. Please shorten it.")
        if first_kept > conv.first_kept:
            log.warning("conversation too long for the context (%d tokens): left out the %d oldest turn(s); "
                        "the image is kept", limit, first_kept)
        reused = 0
        if use_cache:
            reused = min(_common_prefix(conv.cached_tokens, tokens), len(tokens) - 1)  # run >= 1 position
            if conv.cache is None or reused == 0:
                conv.cache, reused = DynamicCache(), 0
            else:
                conv.cache.crop(reused - conv.cache.get_seq_length())
            conv.cached_tokens = tokens[:reused]
        return _Turn(conv=conv, question=question, decoding=decoding, tokens=tokens,
                     embeds=self._embed(tokens, conv.image_embeds), reused=reused,
                     max_new_tokens=min(decoding.max_new_tokens, limit - len(tokens)), first_kept=first_kept)

    def _check_question(self, question: str) -> str:
        if not isinstance(question, str) or not question.strip():
            raise ChatInputError("Please type a question about the image.")
        question = question.strip()
        if len(question) > self.max_question_chars:
            raise ChatInputError(f"The message is too long ({len(question)} characters; at most "
                                 f"{self.max_question_chars}). Please shorten it.")
        if IMAGE_PLACEHOLDER in question:
            raise ChatInputError(f"The message may not contain '{IMAGE_PLACEHOLDER}'.")
        return question

    def _prompt_tokens(self, history: Sequence[tuple[str, str]], question: str) -> list[int]:
        return self.model.layout(history, question, style="chat").tokens

    def _embed(self, tokens: list[int], image_embeds: torch.Tensor) -> torch.Tensor:
        return self.model.embed([tokens], image_embeds)[0]

    def _generate(self, turn: _Turn, cache: Optional[DynamicCache], streamer: Optional[BaseStreamer] = None,
                  cancel: Optional[threading.Event] = None) -> list[int]:
        if cache is not None and turn.decoding.num_beams > 1:
            # beams need one cache row each; expand a copy so the conversation's cache stays valid
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(turn.decoding.num_beams)
        mask = torch.ones(turn.embeds.shape[:2], dtype=torch.long, device=self.model.device)
        out, after = self._run_generate(turn.embeds, mask, cache, turn.decoding, turn.max_new_tokens, streamer,
                                        cancel)
        if turn.decoding.num_beams == 1 and turn.conv.cache is not None:
            turn.conv.cache = after  # the conversation's cache now holds prompt + reply (static: copied back)
        return out[0].tolist()

    def _run_generate(self, embeds, mask, cache, decoding: DecodingConfig, max_new_tokens: int,
                      streamer, cancel) -> tuple[torch.Tensor, Optional[DynamicCache]]:
        """generate's output ids and the dynamic cache that holds the result (`cache` itself, extended in place,
        unless the static buffers ran it)."""
        criteria = StoppingCriteriaList([c for c in (self._stop_strings, cancel and _Cancelled(cancel)) if c])
        kwargs = dict(attention_mask=mask, use_cache=True, max_new_tokens=max_new_tokens,
                      eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                      stopping_criteria=criteria, streamer=streamer, **decoding.generate_kwargs())
        static = self._static is not None and cache is not None and decoding.num_beams == 1
        with _seeded(decoding.seed, self.model.device), (self._static.lock if static else contextlib.nullcontext()):
            if not static:
                return self.model.llm.generate(inputs_embeds=embeds, past_key_values=cache, **kwargs), cache
            capacity = min(decoding.max_length, self.context_limit)
            buffers = self._static.load(cache, embeds.shape[0], capacity, embeds)
            out = self.model.llm.generate(inputs_embeds=embeds, past_key_values=buffers,
                                          **self._static.generate_kwargs(self.model.device), **kwargs)
            return out, self._static.unload(buffers)

    def _finish(self, turn: _Turn, ids: list[int], cancelled: bool = False) -> str:
        conv = turn.conv
        raw = self._decode(ids)
        reply = self.template.clean_reply(raw)
        if any(stop in raw for stop in self.template.stop_strings):
            stopped_by = "stop_string"
        elif self.tokenizer.eos_token_id in ids:
            stopped_by = "eos"
        elif cancelled:
            stopped_by = "cancelled"
        else:
            stopped_by = "max_new_tokens"
        newly_dropped = turn.first_kept - conv.first_kept
        conv.history.append((turn.question, reply))
        conv.first_kept = turn.first_kept
        if conv.cache is not None and turn.decoding.num_beams == 1:
            # generate extended the cache: prompt + all generated tokens but the last
            conv.cached_tokens = (turn.tokens + ids)[:int(conv.cache.get_seq_length())]
        conv.last_turn = TurnReport(prompt_tokens=len(turn.tokens), reused_tokens=turn.reused, new_tokens=len(ids),
                                    max_new_tokens=turn.max_new_tokens, dropped_turns=turn.first_kept,
                                    newly_dropped=newly_dropped, stopped_by=stopped_by,
                                    reply_ids=list(ids))
        return reply

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _left_padded_cache(caches: Sequence[DynamicCache], keep: Sequence[int], width: int) -> DynamicCache:
    """One batch cache of `width` positions: row i holds the first `keep[i]` positions of `caches[i]`, padded
    on the left with zeros (the attention mask hides them)."""
    if width == 0:
        return DynamicCache()
    longest = max(range(len(caches)), key=lambda i: keep[i])  # this row fills all `width` positions

    def rows(index: int, kind: str) -> torch.Tensor:
        like = getattr(caches[longest].layers[index], kind)
        out = []
        for cache, k in zip(caches, keep):
            k = max(k, 0)
            own = getattr(cache.layers[index], kind)[:, :, :k] if k else like[:1, :, :0]
            out.append(torch.cat([like.new_zeros(1, like.shape[1], width - k, like.shape[3]), own], dim=2))
        return torch.cat(out)

    return DynamicCache(ddp_cache_data=[(rows(i, "keys"), rows(i, "values"))
                                        for i in range(len(caches[longest].layers))])


@contextlib.contextmanager
def _seeded(seed: Optional[int], device: torch.device):
    """Seed sampling for this call only; the process-wide RNG state is restored afterwards."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _TokenQueue(BaseStreamer):
    """Hands generated token ids from the generating thread to the reading one."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate first hands over the prompt's ids (none when given embeddings)
            self._prompt_seen = True
            return
        self._queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[list[int]]:
        while (item := self._queue.get()) is not None:
            yield item


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
