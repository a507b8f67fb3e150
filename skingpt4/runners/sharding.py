"""Sharded training (`run.sharding: fsdp`): every process holds 1/N of every weight, frozen ones included, instead
of a whole replica (docs/scaling.md, "Sharded training").

The engine is PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`), the one that accelerate's FSDP plugin drives
(`fsdp_version: 2`); it runs on NCCL and on gloo (CPU), so the same code is tested on a CPU. The units are the
LLM's decoder layers (the classes in its `_no_split_modules`) and the EVA blocks, each all-gathered just before
it runs and freed after; the rest (embeddings, Q-Former, projection, query tokens) is the root unit. Gradients
are reduce-scattered (averaged over processes, as DDP does); the optimizer steps on the local shards.

Checkpoints stay in the one format of `{"model": trainable parameters (full tensors), ...}`; the optimizer state
is saved as torch.distributed.checkpoint's full state dict (parameter names as keys), gathered on every process
and written by rank 0, so a sharded run resumes on any number of processes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from skingpt4.runners.distributed import DistInfo

log = logging.getLogger("skingpt4.train")


def shard_model(model: nn.Module, dist: DistInfo) -> nn.Module:
    """fully_shard the units of `model` (in place) over all processes; build the optimizer afterwards."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(dist.device.type, (dist.world_size,))
    unit_classes = set(getattr(model.llm, "_no_split_modules", None) or ())
    units = [m for m in model.llm.modules() if type(m).__name__ in unit_classes]
    units += list(getattr(model.visual_encoder, "blocks", []))
    on_meta = [name for name, p in model.named_parameters() if p.is_meta]
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    log.info("sharded the model over %d processes (FSDP2: %d units + root)", dist.world_size, len(units))
    if on_meta:
        load_llm_shards(model, dist, on_meta)
    return model


def _local(param: torch.Tensor) -> torch.Tensor:
    return param.to_local() if hasattr(param, "to_local") else param


def load_llm_shards(model: nn.Module, dist: DistInfo, on_meta: list[str]) -> None:
    """Fill the LLM weights that were built on the meta device (`build_model(..., llm_on_meta=True)`): every process
    reads only its own shard of each weight from the safetensors files (torch.distributed.checkpoint's
    HuggingFaceStorageReader reads slices), so the peak per process is about its shard, not a replica. Everything
    that was real (vision, Q-Former, projection, LoRA adapters, buffers) keeps its values."""
    from safetensors import safe_open
    from torch.distributed.checkpoint import HuggingFaceStorageReader, load

    from skingpt4.common.config import ConfigError

    folder = getattr(model.llm, "weights_dir", None)
    if folder is None:
        raise ConfigError("parameters on the meta device but no weights folder to load them from (build_model with "
                          "llm_on_meta=True and model.llm_model)")
    params = dict(model.named_parameters())
    keep = {name: _local(p).detach().clone() for name, p in params.items() if name not in on_meta}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.to_empty(device=dist.device)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in keep.items():
            _local(params[name]).copy_(value)
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    wanted = {}
    for name in on_meta:
        if not name.startswith("llm."):
            raise ConfigError(f"the parameter '{name}' is on the meta device but is not part of the LLM")
        wanted[name[len("llm."):].replace(".base_layer.", ".")] = params[name]  # LoRA wraps the base Linear
    stored = set()
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            stored.update(f.keys())
    missing = sorted(set(wanted) - stored)
    if missing:
        raise ConfigError(f"model.llm_model '{folder}': its safetensors files lack {len(missing)} weight(s) of the LLM, "
                          f"e.g. {missing[:3]}")
    load(wanted, storage_reader=HuggingFaceStorageReader(folder))
    log.info("loaded this process's shards of %d LLM weights from '%s'", len(wanted), folder)


def full_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters as full CPU tensors; a collective: every process calls it."""
    return {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().to("cpu", copy=True)
            for name, p in model.named_parameters() if p.requires_grad}


def load_full_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load full trainable tensors into the sharded parameters (each process keeps its shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from skingpt4.models.checkpoints import CheckpointError

    names = {name for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(names - set(state)), sorted(set(state) - names)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint '{source}' does not match the trainable parameters: "
                              f"missing {missing}, unexpected {unexpected}")
    # strict=False only because the frozen parameters are not in `state`; the trainable keys were checked above
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
