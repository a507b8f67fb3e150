"""YAML configuration: load `--cfg-path`, apply `--options key=value`, check every section against a
schema (a dataclass) so that a typo is an error naming the key and the valid ones, never ignored.

A config has up to five top-level sections:
  model:    built by `skingpt4.models.build_model`; its `variant` picks a variant YAML
            (skingpt4/models/variants/) that is merged *under* the user's block (the user's values win).
  datasets: one block per registered dataset builder name.
  validation: (training) blocks like those of `datasets`, read each epoch for a validation loss.
  run:      the schedule and optimisation settings (training) or decoding (chat).
  evaluation: settings of the evaluation tasks.
and optionally `base: other.yaml` or `base: [a.yaml, b.yaml]` (paths relative to this file): those configs are
loaded first, merged in order, and this file is merged over them, so a recipe's variations are a few lines
(train_configs/tiny_step1.yaml is step1.yaml + tiny.yaml + the synthetic data's paths).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Type

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

TOP_LEVEL_SECTIONS = ("model", "datasets", "validation", "run", "evaluation")
BASE_KEY = "base"


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message says which key and what to do."""


def load_config(cfg_path: str | os.PathLike, options: Iterable[str] = ()) -> DictConfig:
    cfg = OmegaConf.merge(load_layers(Path(cfg_path)), parse_options(options))
    check_keys(cfg, TOP_LEVEL_SECTIONS, where="config")
    try:  # interpolations across sections (run.output_dir: output/${model.variant}_step1) resolve here
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config '{cfg_path}': could not resolve an interpolation: {err}") from None
    return cfg


def load_layers(path: Path, chain: tuple[Path, ...] = ()) -> DictConfig:
    """One YAML file merged over its `base:` (recursively; paths relative to the file). Configs and model
    variants are layered this way."""
    if not path.is_file():
        what = f"the base of '{chain[-1]}'" if chain else "pass an existing YAML file to --cfg-path"
        raise ConfigError(f"config file not found: '{path}' ({what})")
    if path.resolve() in chain:
        raise ConfigError(f"config '{path}': its base chain loops ({' -> '.join(str(p) for p in chain + (path,))})")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends: say which file
        raise ConfigError(f"could not parse YAML config '{path}': {err}") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config '{path}' must be a mapping with sections {', '.join(TOP_LEVEL_SECTIONS)}")
    base = cfg.pop(BASE_KEY, None)
    if base is None:
        return cfg
    bases = [base] if isinstance(base, str) else list(base) if isinstance(base, ListConfig) else None
    if not bases or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config '{path}': '{BASE_KEY}' must be the path of another YAML file (or a list of them, "
                          f"merged in order), got {base!r}")
    layers = [load_layers(path.parent / b, chain + (path.resolve(),)) for b in bases]
    return OmegaConf.merge(*layers, cfg)


def parse_options(options: Iterable[str]) -> DictConfig:
    """`["run.init_lr=1e-4", "model.device=cpu"]` -> a config to merge over the file."""
    options = list(options or ())
    for opt in options:
        if "=" not in opt or opt.startswith("="):
            raise ConfigError(f"--options entries look like key.subkey=value, got '{opt}'")
    try:
        return OmegaConf.from_dotlist(options)
    except OmegaConfBaseException as err:
        raise ConfigError(f"could not parse --options {options}: {err}") from err


def check_keys(section: Any, valid: Iterable[str], where: str) -> None:
    """Raise ConfigError if `section` (a mapping) has a key outside `valid`."""
    if section is None:
        return
    if not isinstance(section, (DictConfig, dict)):
        raise ConfigError(f"'{where}' must be a mapping, got {type(section).__name__}: {section!r}")
    valid = list(valid)
    for key in section.keys():
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{where}.{key}'{hint}; valid keys: {', '.join(sorted(valid))}")


def apply_schema(section: Any, schema: Type, where: str, defaults: Any = None) -> DictConfig:
    """Merge `defaults` then `section` over the dataclass `schema`; unknown keys and wrongly typed values
    are ConfigErrors naming the full key. Nested dataclass fields are checked recursively."""
    _check_against_dataclass(defaults, schema, where)
    _check_against_dataclass(section, schema, where)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), defaults or {}, section or {})
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        text = str(err.msg if getattr(err, "msg", None) else err)
        # OmegaConf appends "full_key: ... / object_type=..." lines: the key is named already, keep one line
        raise ConfigError(f"bad value for '{where}.{key}': {text.strip().splitlines()[0]}") from None
    return merged


def _check_against_dataclass(section: Any, schema: Type, where: str) -> None:
    if section is None:
        return
    types = typing.get_type_hints(schema)  # resolves string annotations (from __future__ import annotations)
    check_keys(section, types, where)
    for name, field_type in types.items():
        sub = section.get(name) if hasattr(section, "get") else None
        if dataclasses.is_dataclass(field_type) and isinstance(sub, (DictConfig, dict)):
            _check_against_dataclass(sub, field_type, f"{where}.{name}")


def to_plain(cfg: Any) -> Any:
    """DictConfig/ListConfig -> plain dict/list (for saving in checkpoints and JSON records)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def require_path(value: Optional[str], key: str, what: str, must_be: str = "exist") -> Path:
    """Return `value` as a Path or raise a ConfigError that names the config key and what belongs there.

    must_be: "exist" (file or directory), "file" or "dir".
    """
    if value is None or str(value).strip() in ("", "???"):
        raise ConfigError(f"config key '{key}' is not set; put {what} there")
    path = Path(os.path.expanduser(str(value)))
    ok = {"exist": path.exists(), "file": path.is_file(), "dir": path.is_dir()}[must_be]
    if not ok:
        kind = {"exist": "", "file": " file", "dir": " directory"}[must_be]
        raise ConfigError(f"config key '{key}': no such{kind} '{value}'; put {what} there")
    return path


@dataclass(frozen=True)
class ConfigPath:
    """A path a part of the project reads from its config, declared next to that part (an evaluation task, a dataset
    builder, the runner) so that an entry point checks exactly what will be read, all at once, before anything
    loads (`raise_path_problems`).

    key: dotted, from the config's top (`evaluation.cases`) or, for a dataset builder, from its block (`storage`).
    kind: exist | file | dir | checkpoint (a non-empty file). each: the value is a list or mapping of such paths.
    optional: a null value is fine. check: a function (value, key) that raises ConfigError, instead of `kind`."""

    key: str
    what: str
    kind: str = "exist"
    optional: bool = False
    each: bool = False
    check: Optional[Callable[[Any, str], Any]] = None

    def problems(self, section: Any, prefix: str = "") -> list[str]:
        """Every problem of this path in `section` (the config, or a dataset block), one message each."""
        key = f"{prefix}{self.key}"
        value = OmegaConf.select(section, self.key, default=None) if isinstance(section, DictConfig) else \
            _select_plain(section, self.key)
        if not _is_set(value):
            return [] if self.optional else [self._problem(value, key)]
        values = (list(value.items()) if isinstance(value, (dict, DictConfig)) else
                  list(enumerate(value)) if isinstance(value, (list, ListConfig)) else None) if self.each else None
        if self.each and values is None:
            return [f"config key '{key}' must be a list (or mapping) of paths, got {value!r}"]
        entries = [(f"{key}.{name}" if isinstance(name, str) else f"{key}[{name}]", v) for name, v in values] \
            if self.each else [(key, value)]
        return [problem for entry_key, entry in entries if (problem := self._problem(entry, entry_key))]

    def _problem(self, value: Any, key: str) -> Optional[str]:
        try:
            if self.check is not None:
                self.check(to_plain(value), key)
            else:
                path = require_path(value, key, self.what, "file" if self.kind == "checkpoint" else self.kind)
                if self.kind == "checkpoint" and path.stat().st_size == 0:
                    return f"config key '{key}': checkpoint '{value}' is empty (0 bytes); was it written completely?"
        except ConfigError as err:
            return str(err)
        return None


def _is_set(value: Any) -> bool:
    return value is not None and str(value).strip() not in ("", "null", "???")


def _select_plain(section: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        section = section.get(part) if hasattr(section, "get") else None
    return section


def config_path_problems(section: Any, paths: Iterable[ConfigPath], prefix: str = "") -> list[str]:
    return [problem for path in paths for problem in path.problems(section, prefix)]


def raise_path_problems(problems: list[str]) -> None:
    """The early, complete report of an entry point (train, chat, evaluate): one ConfigError naming every missing,
    empty or wrong-kind path at once, so that a config with several wrong paths needs one try, not one per path
    (and not after minutes of loading a 13B model). Each part declares the paths it reads next to its code and
    still checks them when it is built (a file can vanish in between)."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise ConfigError(f"{len(problems)} paths in the config need fixing: {listed}")
