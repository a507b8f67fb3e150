"""Reading the project's JSON tables of named entries (the class table, the concept table): one reader, so that
both say the same thing about a file that cannot be used."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_named_entries(path: Path, kind: str, list_key: str, fields: tuple[str, ...],
                       error: type[Exception]) -> dict[str, Any]:
    """The table in `path`, after checking that `list_key` is a non-empty list of entries that each carry `fields`
    and have unique names; a problem raises `error` with a message that names the file (`kind`: "class" ...)."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"cannot read the {kind} table '{path}': {err}") from None
    entries = table.get(list_key) if isinstance(table, dict) else None
    if not isinstance(entries, list) or not entries:
        raise error(f"{kind} table '{path}': expected a non-empty '{list_key}' list")
    for entry in entries:
        missing = [k for k in fields if not isinstance(entry, dict) or k not in entry]
        if missing:
            name = entry.get("name", entry) if isinstance(entry, dict) else entry
            raise error(f"{kind} table '{path}': {kind} {name!r:.60} lacks {missing}")
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise error(f"{kind} table '{path}': {kind} names must be unique")
    return table
