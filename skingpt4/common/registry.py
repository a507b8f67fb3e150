"""Name -> class/function registries, so that YAML can say which model, dataset, processor, task,
runner, LR schedule or chat template to build.

Each kind has its own small `Registry` object. Registration happens when the defining module is
imported; `skingpt4/__init__.py` imports every such module, so `import skingpt4` is all a caller needs.
Looking up a name that is not registered is an error listing the valid names: nothing is guessed.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, Iterator, TypeVar

T = TypeVar("T")


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, object] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise KeyError(f"{self.kind} '{name}' is already registered to {self._entries[name]!r}")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str):
        if name not in self._entries:
            raise KeyError(unknown_choice_message(self.kind, name, self.names()))
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def unknown_choice_message(kind: str, name: str, choices: list[str]) -> str:
    """'unknown model 'skin_gtp4'; did you mean 'skin_gpt4'? valid choices: ...'."""
    close = difflib.get_close_matches(str(name), choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} valid choices: {', '.join(choices) or '(none registered)'}"


models = Registry("model")
processors = Registry("processor")
datasets = Registry("dataset builder")
tasks = Registry("task")
runners = Registry("runner")
lr_schedulers = Registry("LR schedule")
chat_templates = Registry("chat template")
