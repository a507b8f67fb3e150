"""The calibration file of a projection checkpoint (`<checkpoint stem>.calibration.json`, written by
`evaluate.py --task calibrate`): a versioned JSON object, read strictly, because a wrong value here silently
turns abstention off (docs/inference.md, "Differential").

    {"format": "skingpt4-calibration", "version": 2,
     "temperature": 1.7,            # softmax(score / T), a finite number in TEMPERATURE_RANGE
     "abstain_below": 0.5,          # a finite number in [0, 1]: below it the model says "unsure"
     "length_norm": "none",         # how the class scores were computed when T was fitted
     "question": "...",             # the diagnosis question the scores were computed for
     "projection_sha256": "...",    # the projection weights it was fitted for (64 hex digits)
     "ood": {"dim": 256, "seed": 0, "quantile": 0.95, "threshold": 0.21, "features": [[...], ...]},
     ... the fit's figures (n, nll_before, before, after, ...)}

Every problem is refused in one line naming the file and the field: not a regular file, over 16 MB, not UTF-8,
not JSON, nested too deeply, NaN or Infinity anywhere, a missing field, a wrong type (a string "0.05", null, a
boolean), a value out of range, an unknown field, another format or version.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from skingpt4.chat.ood import OODReference
from skingpt4.common.config import ConfigError

FORMAT = "skingpt4-calibration"
VERSION = 2
MAX_BYTES = 16 * 2**20
MAX_DEPTH = 5                      # root > ood > features > row > number
TEMPERATURE_RANGE = (1e-3, 1e3)   # the search interval of the fit (open at both ends)
LENGTH_NORMS = ("none", "mean")   # a class's score: its answer's log-likelihood, or that per answer token
MIN_REFERENCE_IMAGES = 2
# the fit's figures, kept for the reader; checked for type only
INFORMATION = {"fitted_on": str, "n": int, "checkpoint": str, "nll_before": float, "nll_after": float,
               "before": dict, "after": dict, "created_utc": str}
REQUIRED = ("format", "version", "temperature", "abstain_below", "length_norm", "question", "projection_sha256",
            "ood")


class CalibrationError(ConfigError):
    """A calibration file that cannot be trusted; the message names the file and the field."""


class _NonFinite:
    """What NaN, Infinity or an overflowing number parse to, so that the field holding it can be named."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _parse_float(text: str):
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


@dataclass(frozen=True)
class Calibration:
    """A validated calibration: what the differential needs to turn class scores into honest probabilities."""

    temperature: float
    abstain_below: float
    length_norm: str
    question: str
    projection_sha256: str
    ood: OODReference
    information: dict = field(default_factory=dict)   # the fit's figures (INFORMATION)
    path: Optional[Path] = None

    def as_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "temperature": self.temperature,
                "abstain_below": self.abstain_below, "length_norm": self.length_norm, "question": self.question,
                "projection_sha256": self.projection_sha256, **self.information, "ood": self.ood.as_json()}


def _fail(path, problem: str) -> CalibrationError:
    return CalibrationError(f"calibration file '{path}': {problem}; fit it again (evaluate.py --task calibrate) "
                            "or delete it")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, _NonFinite):
        return f"{value.text} (not a finite number)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{json.dumps(value[:40])} (a string)"
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return repr(value)


def _real(path, name: str, value: Any, low: float, high: float, open_interval: bool) -> float:
    interval = f"({low:g}, {high:g})" if open_interval else f"[{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, f"field '{name}' must be a finite number in {interval}, got {_describe(value)}")
    inside = low < value < high if open_interval else low <= value <= high
    if not inside:
        raise _fail(path, f"field '{name}' must be a finite number in {interval}, got {value!r}")
    return float(value)


def _integer(path, name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(path, f"field '{name}' must be an integer in [{low}, {high}], got {_describe(value)}")
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:  # deeper than allowed: no need to walk further
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _read_text(path: Path) -> str:
    try:
        info = os.stat(path)
    except OSError as err:
        raise _fail(path, f"cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _fail(path, "is not a regular file")
    if info.st_size > MAX_BYTES:
        raise _fail(path, f"is {info.st_size} bytes, more than the {MAX_BYTES} a calibration file may hold")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise _fail(path, f"cannot be read ({err.strerror})") from None
    if len(data) > MAX_BYTES:  # it grew since stat
        raise _fail(path, f"holds more than the {MAX_BYTES} bytes a calibration file may hold")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _fail(path, f"is not UTF-8 text (byte {err.start})") from None


def parse_calibration(text: str, path: str | Path = "<text>") -> Calibration:
    try:
        record = json.loads(text, parse_float=_parse_float, parse_constant=_NonFinite)
    except RecursionError:
        raise _fail(path, f"is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as err:
        raise _fail(path, f"is not JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if not isinstance(record, dict):
        raise _fail(path, f"must hold a JSON object, not {_describe(record)}")
    if _depth(record) > MAX_DEPTH:
        raise _fail(path, f"is nested deeper than {MAX_DEPTH} levels")
    if record.get("format") != FORMAT:
        raise _fail(path, f"field 'format' must be {json.dumps(FORMAT)}, got "
                          f"{_describe(record.get('format')) if 'format' in record else 'nothing'} (not a SkinGPT-4 "
                          "calibration file, or one from an older version)")
    if record.get("version") != VERSION or isinstance(record.get("version"), bool):
        raise _fail(path, f"field 'version' must be {VERSION}, got {_describe(record.get('version'))}")
    missing = [name for name in REQUIRED if name not in record]
    if missing:
        raise _fail(path, f"field '{missing[0]}' is missing")
    unknown = sorted(set(record) - set(REQUIRED) - set(INFORMATION))
    if unknown:
        raise _fail(path, f"field '{unknown[0]}' is not a calibration field")
    temperature = _real(path, "temperature", record["temperature"], *TEMPERATURE_RANGE, open_interval=True)
    abstain_below = _real(path, "abstain_below", record["abstain_below"], 0.0, 1.0, open_interval=False)
    if record["length_norm"] not in LENGTH_NORMS or not isinstance(record["length_norm"], str):
        raise _fail(path, f"field 'length_norm' must be one of {', '.join(LENGTH_NORMS)}, got "
                          f"{_describe(record['length_norm'])}")
    if not isinstance(record["question"], str) or not record["question"].strip():
        raise _fail(path, f"field 'question' must be the diagnosis question, got {_describe(record['question'])}")
    sha = record["projection_sha256"]
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise _fail(path, f"field 'projection_sha256' must be 64 lowercase hex digits, got {_describe(sha)}")
    information = {}
    for name, kind in INFORMATION.items():
        if name in record:
            value = record[name]
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if kind is float else \
                (isinstance(value, kind) and not isinstance(value, bool))
            if not ok:
                raise _fail(path, f"field '{name}' must be a {'number' if kind is float else kind.__name__}, "
                                  f"got {_describe(value)}")
            if isinstance(value, dict):
                bad = next((k for k, v in value.items() if isinstance(v, _NonFinite)), None)
                if bad is not None:
                    raise _fail(path, f"field '{name}.{bad}' is {_describe(value[bad])}")
            information[name] = value
    return Calibration(temperature, abstain_below, record["length_norm"], record["question"], sha,
                       _ood(path, record["ood"]), information, Path(path))


def _ood(path, value: Any) -> OODReference:
    if not isinstance(value, dict):
        raise _fail(path, f"field 'ood' must be an object, got {_describe(value)}")
    for name in ("dim", "seed", "quantile", "threshold", "features"):
        if name not in value:
            raise _fail(path, f"field 'ood.{name}' is missing")
    unknown = sorted(set(value) - {"dim", "seed", "quantile", "threshold", "features"})
    if unknown:
        raise _fail(path, f"field 'ood.{unknown[0]}' is not a calibration field")
    dim = _integer(path, "ood.dim", value["dim"], 8, 4096)
    seed = _integer(path, "ood.seed", value["seed"], 0, 2**31 - 1)
    quantile = _real(path, "ood.quantile", value["quantile"], 0.5, 1.0, open_interval=False)
    threshold = _real(path, "ood.threshold", value["threshold"], 0.0, 2.0, open_interval=False)  # unit vectors
    rows = value["features"]
    if not isinstance(rows, list) or len(rows) < MIN_REFERENCE_IMAGES:
        raise _fail(path, f"field 'ood.features' must list at least {MIN_REFERENCE_IMAGES} feature rows, got "
                          f"{_describe(rows) if not isinstance(rows, list) else len(rows)}")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != dim:
            raise _fail(path, f"field 'ood.features[{i}]' must list {dim} numbers, got "
                              f"{_describe(row) if not isinstance(row, list) else len(row)}")
        bad = next((v for v in row if isinstance(v, bool) or not isinstance(v, (int, float)) or abs(v) > 1.0001),
                   None)
        if bad is not None:
            raise _fail(path, f"field 'ood.features[{i}]' holds {_describe(bad)}, not a number in [-1, 1]")
    features = torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float64), dim=-1)
    return OODReference(features, threshold, dim, seed, quantile)


def read_calibration_file(path: str | Path) -> Calibration:
    """The validated calibration in `path`, or a CalibrationError naming the file and the field."""
    path = Path(path)
    return parse_calibration(_read_text(path), path)


def write_calibration_file(path: str | Path, calibration: Calibration) -> Path:
    """Atomically (a temporary file renamed over `path`); what is written reads back through the strict reader."""
    path = Path(path)
    try:
        text = json.dumps(calibration.as_json(), indent=1, allow_nan=False)
    except ValueError as err:
        raise _fail(path, f"would hold a non-finite number ({err})") from None
    parse_calibration(text, path)  # never write a file that would be refused
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
