"""The trainable set of a model, named once (`TRAINABLE_PREFIXES`) and used for `requires_grad`, for saving and for
loading: a checkpoint holds exactly the trainable parameters, and loading it is strict about them. Adapters added
to a frozen part (LoRA, models/lora.py) train too: every parameter with `ADAPTER_MARKER` in its name."""
from __future__ import annotations

import torch

from skingpt4.models.checkpoints import CheckpointError
from skingpt4.models.lora import ADAPTER_MARKER


class TrainableSet:
    """Mixin for an nn.Module whose trainable parameters are those named with one of `TRAINABLE_PREFIXES`, plus
    the adapter parameters (`ADAPTER_MARKER` in the name) when it has adapters."""

    TRAINABLE_PREFIXES: tuple[str, ...] = ()

    def is_trainable(self, name: str) -> bool:
        return name.startswith(self.TRAINABLE_PREFIXES) or ADAPTER_MARKER in name

    def apply_trainable_set(self) -> None:
        """requires_grad on the trainable parameters, off everywhere else."""
        for name, param in self.named_parameters():
            param.requires_grad = self.is_trainable(name)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable parameters, detached copies on the CPU (what checkpoints hold)."""
        return {name: p.detach().to("cpu", copy=True) for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Every trainable parameter must be present and nothing else may be (unlike the original's
        `strict=False`, which silently loads nothing when names differ)."""
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise CheckpointError(f"checkpoint '{source}' does not match the trainable parameters: "
                                  f"missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for name, value in state.items():
                if params[name].shape != value.shape:
                    raise CheckpointError(f"checkpoint '{source}': '{name}' has shape {tuple(value.shape)}, "
                                          f"the model expects {tuple(params[name].shape)}")
                params[name].copy_(value)
