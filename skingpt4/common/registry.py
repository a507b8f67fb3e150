"""Name -> class/function registries, for the kinds where YAML has a real choice to make: dataset builders,
processors, LR schedules and chat templates.

Each kind has its own small `Registry` object, which names the module that defines its built-in entries
(`skingpt4.prompting` for chat templates, ...). Registration happens when that module is imported, and a registry
imports it on its first look-up: so `registry.chat_templates.get("vicuna_v0")` works after importing only this
module, and a command that needs no model (data preparation, say) never pays for importing torch and transformers.
Looking up a name that is not registered is an error listing the valid names: nothing is guessed.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Dict, Iterator, TypeVar

T = TypeVar("T")


class Registry:
    def __init__(self, kind: str, builtins_package: str):
        self.kind = kind
        self.builtins_package = builtins_package
        self._entries: Dict[str, object] = {}

    def _entries_with_builtins(self) -> Dict[str, object]:
        importlib.import_module(self.builtins_package)  # registers the built-in entries (once; then cached)
        return self._entries

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise KeyError(f"{self.kind} '{name}' is already registered to {self._entries[name]!r}")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str):
        entries = self._entries_with_builtins()
        if name not in entries:
            raise KeyError(unknown_choice_message(self.kind, name, self.names()))
        return entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries_with_builtins())

    def __contains__(self, name: str) -> bool:
        return name in self._entries_with_builtins()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def unknown_choice_message(kind: str, name: str, choices: list[str]) -> str:
    """'unknown model 'skin_gtp4'; did you mean 'skin_gpt4'? valid choices: ...'."""
    close = difflib.get_close_matches(str(name), choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} valid choices: {', '.join(choices) or '(none registered)'}"


processors = Registry("processor", "skingpt4.processors")
datasets = Registry("dataset builder", "skingpt4.datasets")
lr_schedulers = Registry("LR schedule", "skingpt4.runners.lr_schedules")
chat_templates = Registry("chat template", "skingpt4.prompting")
