"""Reading and writing checkpoints in every format of docs/model.md ("Checkpoint formats"), loudly: the one
module for checkpoint files, of the frozen parts, of fine-tuned projections and of training runs.

Every load checks the keys it expects against the keys it found: a missing key, an unexpected key or a shape
mismatch is a `CheckpointError` saying what was expected and what was found (the original code's
`strict=False` silently loaded nothing when names differed). Each load returns a `LoadReport` that is also
logged, so a user can see what came from where.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from skingpt4.common.config import ConfigError
from skingpt4.models.variant_files import describe_width

log = logging.getLogger("skingpt4.checkpoints")

# Names under which a fine-tuned projection is stored: ours / MiniGPT-4, older SkinGPT-4 files, transformers BLIP-2.
PROJECTION_PREFIXES = ("llama_proj", "llm_proj", "language_projection")
# Buffers that fine-tuned MiniGPT-4/SkinGPT-4 files carry and that mean nothing to us.
_IGNORABLE_IN_PROJECTION_CKPT = re.compile(r"(\.rotary_emb\.inv_freq$|^Qformer\.bert\.embeddings\.position_ids$)")
# The MiniGPT-4 Llama-2 variant without Q-Former projects 4 merged ViT tokens (4 x 1408) per LLM token.
_NO_QFORMER_IN_FEATURES = 5632
# Training-run checkpoints (written by the runner) carry this in "format".
CHECKPOINT_FORMAT = 1


class CheckpointError(ConfigError):
    """A checkpoint that does not fit the model; the message says what was expected and what was found.
    A ConfigError, because the fix is in the config (point it at the right file or architecture): every entry
    point that reports config errors in one line reports these too."""


@dataclass
class LoadReport:
    source: str
    what: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        ignored = f", ignored {len(self.ignored)} ({_summarise(self.ignored)})" if self.ignored else ""
        return f"loaded {self.what} from '{self.source}': {len(self.loaded)} tensors{ignored}"


def _summarise(keys: Iterable[str], n: int = 3) -> str:
    keys = list(keys)
    more = f", ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def llm_size(hidden: int) -> str:
    return describe_width(hidden)


# ---------------------------------------------------------------------------------------------------------
# reading


def read_checkpoint(path: str | os.PathLike, key: Optional[str] = None, require: Iterable[str] = ()) -> dict:
    """torch.load with weights_only=True (these files hold only tensors and plain containers).

    The one reader of checkpoint files: every way a file can be wrong (absent, empty, cut short, not a torch
    file, a pickle that asks to run code, no `require`d top-level keys) is a one-line `CheckpointError` naming
    the config `key` (when given) and the file. A refused pickle is reported as what it is -- not a safe
    checkpoint -- and never with advice to load it unsafely."""
    path = Path(path)
    where = f"config key '{key}': " if key else ""
    if not path.is_file():
        raise CheckpointError(f"{where}no such checkpoint file '{path}'")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{where}checkpoint '{path}' is empty (0 bytes); was it written completely?")
    try:
        with warnings.catch_warnings():  # the refusal below says all there is to say about an odd pickle
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):  # legacy (non-zip) files cannot be memory-mapped
                    raise
                payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{where}checkpoint '{path}' {_load_failure(err, path)}") from None
    missing = [k for k in require if not (isinstance(payload, dict) and k in payload)]
    if missing:
        top = sorted(map(str, payload))[:8] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{where}'{path}' is not a checkpoint with {', '.join(repr(k) for k in missing)} "
                              f"(top level: {top})")
    return payload


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_DAMAGED = ("central directory", "unexpected eof", "corrupted", "truncated", "failed reading zip")


def _load_failure(err: Exception, path: Path) -> str:
    """What went wrong in torch.load, in one line, without torch's advice to load the file unsafely."""
    text = str(err)
    if _zip_without_end(path):  # torch says only "[Errno 22] Invalid argument" for a cut zip
        return "is damaged or cut short (an interrupted download or copy?); get a complete copy of the file"
    if isinstance(err, pickle.UnpicklingError) or "weights only load failed" in text.lower():
        refused = _REFUSED_GLOBAL.search(text)
        what = (f"it asks to import and call '{refused.group(1)}'" if refused
                else "it holds Python objects other than tensors and plain containers")
        return (f"was refused: {what}, which a file of weights never needs. It is not a safe checkpoint (it may "
                "have been made to run code on this machine); use the checkpoint from its original source")
    if isinstance(err, EOFError) or any(word in text.lower() for word in _DAMAGED):
        return "is damaged or cut short (an interrupted download or copy?); get a complete copy of the file"
    detail = " ".join(text.split())[:160] or "(no message)"
    return (f"could not be read ({type(err).__name__}: {detail}); expected a torch .pth file holding only tensors "
            "and plain containers")


def _zip_without_end(path: Path) -> bool:
    """A zip-format (torch >= 1.6) file whose end-of-central-directory record is missing: it was cut short."""
    try:
        with path.open("rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                return False
            size = path.stat().st_size
            fh.seek(max(0, size - 65_557))  # the record (22 bytes) plus the longest zip comment
            return b"PK\x05\x06" not in fh.read()
    except OSError:
        return False


def state_dict_of(obj: dict, path: str | os.PathLike) -> dict:
    """The state dict of a checkpoint: `obj["model"]` (LAVIS/MiniGPT-4/ours) or `obj` itself if it is one."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return obj
    keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"'{path}' is neither a state dict nor a {{'model': state_dict}} checkpoint; top level: {keys}")


def load_into(module: nn.Module, state_dict: dict, source: str, what: str, ignored: Iterable[str] = ()) -> LoadReport:
    """Strictly load `state_dict` into `module`, turning torch's error into one that names the file."""
    expected = set(module.state_dict().keys())
    found = set(state_dict)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if not found & expected:
        raise CheckpointError(
            f"'{source}' supplies none of the {what} weights: expected keys like {_summarise(sorted(expected))}; "
            f"found keys like {_summarise(sorted(found)) or '(none)'}"
        )
    if missing or unexpected:
        raise CheckpointError(
            f"'{source}' does not match the {what}: missing {len(missing)} keys ({_summarise(missing) or '-'}), "
            f"unexpected {len(unexpected)} keys ({_summarise(unexpected) or '-'})"
        )
    own = module.state_dict()
    for key in sorted(expected):
        if tuple(own[key].shape) != tuple(state_dict[key].shape):
            raise CheckpointError(
                f"'{source}': '{key}' has shape {tuple(state_dict[key].shape)} but the {what} expects "
                f"{tuple(own[key].shape)} (does the config describe the architecture of this checkpoint?)"
            )
    module.load_state_dict(state_dict, strict=True)
    report = LoadReport(source=str(source), what=what, loaded=sorted(found), ignored=sorted(ignored))
    log.info("%s", report)
    return report


# ---------------------------------------------------------------------------------------------------------
# the projection of a fine-tuned SkinGPT-4 / MiniGPT-4 checkpoint


def find_projection(state_dict: dict, source: str) -> tuple[str, dict]:
    """-> (the name it was stored under, {"weight", "bias"}). Errors say what was expected and found."""
    for prefix in PROJECTION_PREFIXES:
        if f"{prefix}.weight" in state_dict:
            proj = {k.split(".", 1)[1]: v for k, v in state_dict.items() if k.startswith(prefix + ".")}
            if set(proj) != {"weight", "bias"}:
                raise CheckpointError(f"'{source}': projection '{prefix}' has {sorted(proj)}, expected weight and bias")
            return prefix, proj
    raise CheckpointError(
        f"'{source}' has no projection: expected 'llama_proj.weight' (or '{PROJECTION_PREFIXES[1]}.weight' / "
        f"'{PROJECTION_PREFIXES[2]}.weight'); found keys: {_summarise(sorted(state_dict), 5) or '(none)'}"
    )


def load_projection(proj: nn.Linear, path: str | os.PathLike, key: Optional[str] = None) -> LoadReport:
    source = str(path)
    state_dict = state_dict_of(read_checkpoint(path, key), path)
    prefix, weights = find_projection(state_dict, source)
    out_features, in_features = weights["weight"].shape
    if in_features == _NO_QFORMER_IN_FEATURES and proj.in_features != _NO_QFORMER_IN_FEATURES:
        raise CheckpointError(
            f"'{source}' is a MiniGPT-4 Llama-2 checkpoint without Q-Former (Linear({in_features}, {out_features}) over "
            "merged ViT tokens); SkinGPT-4 projects the 32 Q-Former queries and does not support this variant"
        )
    if in_features != proj.in_features:
        raise CheckpointError(
            f"'{source}': projection '{prefix}' reads {in_features} features but our Q-Former gives {proj.in_features}"
        )
    if out_features != proj.out_features:
        raise CheckpointError(
            f"'{source}': checkpoint projects to {out_features} ({llm_size(out_features)}) but llm_model has hidden "
            f"size {proj.out_features} ({llm_size(proj.out_features)}); use the LLM (model.variant) this checkpoint "
            "was trained with"
        )
    other = [k for k in state_dict if not k.startswith(prefix + ".")]
    unknown = [k for k in other if not _IGNORABLE_IN_PROJECTION_CKPT.search(k)]
    if unknown:
        log.warning("'%s': ignoring %d keys that are not the projection: %s", source, len(unknown), _summarise(unknown))
    report = load_into(proj, weights, source, f"projection (stored as '{prefix}')", ignored=other)
    return report


# ---------------------------------------------------------------------------------------------------------
# writing


def save_checkpoint(path: str | os.PathLike, model_state: dict, **extra) -> Path:
    """Write `{"model": model_state, **extra}` atomically: a temporary file in the same folder, flushed to disk,
    then renamed over `path` (`os.replace` is atomic on POSIX), so a kill at any moment leaves the previous
    complete file or the new one, never a truncated checkpoint. The format is the one MiniGPT-4 reads. The
    training runner saves its whole state through this (optimizer, schedule, RNG... as `extra`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": {k: v.detach().cpu() for k, v in model_state.items()}, **extra}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Whatever happened (disk full, Ctrl-C), the previous checkpoint at `path` is untouched.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    # Make the rename itself durable: a power cut right after it must not bring back the old file.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


TEMP_SUFFIX = ".tmp"
# What save_checkpoint's mkstemp names look like: '.<name>.pth.<8 random characters>.tmp'.
_OUR_TEMP_FILE = re.compile(r"^\..+\.pth\.[A-Za-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")


def sweep_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed `save_checkpoint` left in `folder` (a SIGKILL runs no clean-up).
    Only files of our own naming are touched. Call it when no save into `folder` is under way (a run's start
    or resume). Returns the files removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for candidate in sorted(folder.iterdir()):
        if _OUR_TEMP_FILE.match(candidate.name) and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    if removed:
        log.info("removed %d unfinished checkpoint file(s) a killed run left in '%s': %s", len(removed), folder,
                 _summarise(p.name for p in removed))
    return removed


# ---------------------------------------------------------------------------------------------------------
# transformers BLIP-2 snapshot directories (only vision + Q-Former + query tokens are read)

_HF_BLIP2_PREFIXES = ("vision_model.", "qformer.", "query_tokens")


def read_hf_blip2_parts(directory: str | os.PathLike) -> tuple[dict, dict]:
    """-> (config.json as a dict, {key: tensor} for vision_model.*, qformer.*, query_tokens). The language model's
    weights are never read: with safetensors only the needed tensors are loaded, shard by shard."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"'{directory}' is not a transformers BLIP-2 snapshot: no config.json")
    config = json.loads(config_file.read_text())
    files = _weight_files(directory)
    wanted: dict = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as fh:
                for key in fh.keys():
                    if key.startswith(_HF_BLIP2_PREFIXES):
                        wanted[key] = fh.get_tensor(key)
        else:
            sd = state_dict_of(read_checkpoint(file), file)
            wanted.update({k: v for k, v in sd.items() if k.startswith(_HF_BLIP2_PREFIXES)})
    if not wanted:
        raise CheckpointError(f"'{directory}': no vision_model.*, qformer.* or query_tokens weights in {[f.name for f in files]}")
    return config, wanted


def _weight_files(directory: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            needed = {f for k, f in weight_map.items() if k.startswith(_HF_BLIP2_PREFIXES)}
            return [directory / f for f in sorted(needed)]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return [directory / name]
    raise CheckpointError(f"'{directory}': no model.safetensors, pytorch_model.bin or their index files")


# ---------------------------------------------------------------------------------------------------------
# training runs: {"model": trainable state, "optimizer", "lr_scheduler", "scaler", "config", "epoch", "step",
# "rng", "format"}; written with save_checkpoint, so the original code reads their projection


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    # torch.load(weights_only=True) returns the inner tuple as a list; random.setstate needs tuples.
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    # Resuming on another number of GPUs (or on a CPU) keeps their fresh CUDA RNG states.
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_training_checkpoint(path: str | os.PathLike, key: str = "run.resume_ckpt_path") -> dict:
    """A checkpoint written by the runner, to resume from."""
    payload = read_checkpoint(path, key)
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"config key '{key}': '{path}' is not a {{'model': ...}} training checkpoint")
    missing = [k for k in ("optimizer", "lr_scheduler", "step") if k not in payload]
    if missing:
        raise CheckpointError(f"config key '{key}': '{path}' lacks {missing}: it holds weights only, not a run to "
                              "resume; to start from its projection set model.ckpt instead of run.resume_ckpt_path")
    return payload
