"""Static-cache decoding (`run.kv_cache: static`, optionally `run.compile_decoding: true`; docs/performance.md).

A conversation keeps its KV cache as a growing `DynamicCache` (cropped to the common prefix of each new prompt,
engine.py). With the static option each generate call instead runs on one preallocated `StaticCache` per batch
size, reused by every turn and every conversation: the conversation's cached prefix is copied in, generate
appends to it in place, and the result is copied back out. Fixed shapes and fixed addresses are what
`torch.compile` (and its CUDA graphs, mode "reduce-overhead") need to replay one decoding step without
re-tracing; without compilation the static cache alone changes nothing but memory (the buffers hold
`capacity` positions whatever the conversation's length). Greedy tokens are the same as with the dynamic cache
(tests/test_perf_paths.py; the GPU acceptance run checks the compiled path on the real size).

One generate at a time per engine (a lock guards the buffers).
"""
from __future__ import annotations

import threading
from typing import Optional

import torch
from transformers import CompileConfig, DynamicCache, StaticCache

KV_CACHES = ("dynamic", "static")


class StaticBuffers:
    def __init__(self, llm: torch.nn.Module, compile_decoding: bool, backend: str = "inductor",
                 max_batches: int = 2):
        self.llm, self.compile_decoding, self.backend = llm, compile_decoding, backend
        self.max_batches = max_batches
        self._caches: dict[tuple[int, int], StaticCache] = {}
        self.lock = threading.Lock()

    def _get(self, batch: int, capacity: int, like: torch.Tensor) -> StaticCache:
        key = (batch, capacity)
        if key not in self._caches:
            while len(self._caches) >= self.max_batches:  # bound the memory: drop the oldest buffers
                self._caches.pop(next(iter(self._caches)))
            config = self.llm.config
            heads = config.num_key_value_heads or config.num_attention_heads
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            cache = StaticCache(config=config, max_cache_len=capacity)
            cache.early_initialization(batch, heads, head_dim, like.dtype, like.device)
            self._caches[key] = cache
        return self._caches[key]

    def load(self, cache: Optional[DynamicCache], batch: int, capacity: int, like: torch.Tensor) -> StaticCache:
        """The static buffers of `batch` rows holding `cache`'s positions (none for an empty cache)."""
        static = self._get(batch, capacity, like)
        length = cache.get_seq_length() if cache is not None else 0
        for index, layer in enumerate(static.layers):
            if length:
                source = cache.layers[index]
                layer.keys[:, :, :length].copy_(source.keys)
                layer.values[:, :, :length].copy_(source.values)
            layer.cumulative_length.fill_(length)  # in place: its address is static too
        return static

    @staticmethod
    def unload(static: StaticCache) -> DynamicCache:
        """A dynamic copy of what the static buffers hold after generate (prompt + generated tokens)."""
        length = int(static.get_seq_length())
        return DynamicCache(ddp_cache_data=[(layer.keys[:, :, :length].clone(), layer.values[:, :, :length].clone())
                                            for layer in static.layers])

    def generate_kwargs(self, device: torch.device) -> dict:
        """generate's compile switch: transformers compiles a static-cache decoding step on CUDA by itself, so
        without `compile_decoding` it is switched off explicitly; on a CPU it is switched on explicitly."""
        if not self.compile_decoding:
            return {"disable_compile": True}
        on_cuda = device.type == "cuda"
        config = CompileConfig(fullgraph=False, dynamic=False, backend=self.backend,
                               mode="reduce-overhead" if on_cuda and self.backend == "inductor" else None)
        if not on_cuda:
            config._compile_all_devices = True
        return {"compile_config": config}
