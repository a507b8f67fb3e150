"""SkinGPT-4 -> a standard transformers BLIP-2 directory (docs/scaling.md, "Export").

SkinGPT-4 is transformers' `Blip2ForConditionalGeneration` with a Llama language model: our EVA-ViT-g +
ln_vision is its `vision_model` (`post_layernorm` = ln_vision), our Q-Former is its `qformer` (the same class),
`query_tokens` are its query tokens, `llama_proj` is its `language_projection` and our LLM is its
`language_model`. The weights are renamed by the converters next to each part (`ours_to_hf_vision`) and put into
a `Blip2ForConditionalGeneration` built on the meta device (no second copy of a 13B LLM in memory), which
transformers then saves (`save_pretrained`: config.json with the Llama `text_config` and `num_query_tokens`,
safetensors shards). The tokenizer gains the `<image>` token (its id is `image_token_index`); the LLM's input
embedding and LM head gain one row for it (zeros: its embedding is always replaced by an image query, its logit
is 0). A `Blip2Processor` (image processor with our eval transform's numbers + tokenizer + chat template) is saved
beside it, and our projection in the SkinGPT-4 checkpoint format (`skingpt4_projection.pth`), which with
`model.blip2_hf_dir=DIR` rebuilds our model from the export.

What the format cannot hold is refused with a message: LoRA adapters that are not merged (`merge=True` folds
them into the LLM weights), a quantized LLM, a non-empty output directory, non-finite (NaN / inf) weights.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from skingpt4.common.config import ConfigError
from skingpt4.common.precision import DTYPES
from skingpt4.export.prompt import IMAGE_TOKEN, chat_template_jinja
from skingpt4.models.checkpoints import save_checkpoint
from skingpt4.models.eva_vit import ours_to_hf_vision
from skingpt4.models.identity import model_identity
from skingpt4.models.llm import load_tokenizer
from skingpt4.models.lora import has_adapters, merge_adapters
from skingpt4.processors.image import CLIP_MEAN, CLIP_STD

log = logging.getLogger("skingpt4.export")
PROJECTION_FILE = "skingpt4_projection.pth"
EXPORT_INFO_FILE = "skingpt4_export.json"


class ExportError(ConfigError):
    """The model (or the request) cannot be written as a transformers BLIP-2 directory; the message says why."""


@dataclass
class ExportReport:
    out_dir: Path
    image_token_id: int
    vocab_size: int          # the exported LLM's, `<image>` included
    merged_lora_layers: int
    dtype: str


def check_exportable(model, out_dir: Path, merge: bool) -> None:
    if model.cfg.llm_quantization != "none":
        raise ExportError(f"model.llm_quantization={model.cfg.llm_quantization}: a BLIP-2 directory holds plain "
                          "weights; export from a config with model.llm_quantization=none (QLoRA adapters merge "
                          "onto the full-precision base)")
    if has_adapters(model.llm) and not merge:
        raise ExportError("the model has LoRA adapters (model.lora.r > 0) and a transformers BLIP-2 directory has no "
                          "place for them; pass --merge to fold them into the LLM weights")
    check_out_dir(out_dir)


def check_finite(model) -> None:
    """Refuse to export a model with NaN or infinite weights (it would serve NaN scores or garbage)."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ExportError(f"the weight '{name}' holds {bad} non-finite value(s) (NaN or inf); refusing to export "
                              "it (check model.ckpt and the weight files)")


def check_out_dir(out_dir: Path) -> None:
    """A new or empty directory that can be written: checked before the (minutes-long) model build, by creating
    it and a probe file in it (a path under a file, in /proc or on a read-only disk fails here, in one line)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"--out '{out_dir}' exists and is not an empty directory; choose a new directory")
    parent = next((p for p in out_dir.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ExportError(f"--out '{out_dir}': '{parent}' is a file, not a directory; choose another path")
    probe = out_dir / ".skingpt4-write-probe"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ExportError(f"--out '{out_dir}' cannot be written ({err.strerror or err}); choose a writable "
                          "directory") from None


def blip2_config(model, vocab_size: int, image_token_id: int, dtype: torch.dtype):
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig

    v, q = model.cfg.vision, model.cfg.qformer
    vision = Blip2VisionConfig(
        hidden_size=v.width, intermediate_size=v.mlp_hidden, num_hidden_layers=v.depth,
        num_attention_heads=v.num_heads, image_size=v.image_size, patch_size=v.patch_size, hidden_act="gelu",
        # one eps for the blocks and post_layernorm (= ln_vision, eps ln_vision_eps in ours): docs/scaling.md
        layer_norm_eps=v.block_eps, qkv_bias=True)
    qformer = Blip2QFormerConfig(
        hidden_size=q.hidden_size, num_hidden_layers=q.num_layers, num_attention_heads=q.num_heads,
        intermediate_size=q.intermediate_size, cross_attention_frequency=q.cross_attention_frequency,
        layer_norm_eps=q.layer_norm_eps, encoder_hidden_size=v.width, hidden_act="gelu")
    text = model.llm.config.to_dict()
    text.update(vocab_size=vocab_size, dtype=str(dtype).replace("torch.", ""))
    text.pop("quantization_config", None)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text,
                         num_query_tokens=q.num_query_tokens, image_token_index=image_token_id)
    config.dtype = dtype
    return config


def _with_image_row(weight: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """An embedding / LM-head matrix grown to `vocab_size` rows with zeros (the `<image>` token's row)."""
    extra = vocab_size - weight.shape[0]
    return weight if extra <= 0 else torch.cat([weight, weight.new_zeros(extra, weight.shape[1])])


def blip2_state_dict(model, vocab_size: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Our weights under `Blip2ForConditionalGeneration`'s names."""
    state = {f"vision_model.{k}": v for k, v in ours_to_hf_vision(model.visual_encoder.state_dict()).items()}
    state.update({f"qformer.{k}": v for k, v in model.qformer.state_dict().items()})
    state["query_tokens"] = model.query_tokens.detach()
    state["language_projection.weight"] = model.llama_proj.weight.detach()
    state["language_projection.bias"] = model.llama_proj.bias.detach()
    modules = {id(m): name for name, m in model.llm.named_modules()}
    grown = {f"{modules[id(m)]}.weight" for m in (model.llm.get_input_embeddings(), model.llm.get_output_embeddings())
             if m is not None}
    for key, value in model.llm.state_dict().items():
        if key in grown:
            value = _with_image_row(value, vocab_size)
        state[f"language_model.{key}"] = value
    return {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype) for k, v in state.items()}


def build_processor(model, tokenizer, chat_template: str):
    """A `Blip2Processor`: our eval transform's numbers (resize to S x S bicubic, no crop, CLIP mean/std), the
    tokenizer (it adds `<image>`) and the chat template."""
    from transformers import Blip2Processor, BlipImageProcessor
    from transformers.image_utils import PILImageResampling

    size = model.cfg.vision.image_size
    images = BlipImageProcessor(do_resize=True, size={"height": size, "width": size},
                                resample=PILImageResampling.BICUBIC, do_rescale=True, rescale_factor=1 / 255,
                                do_normalize=True, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD),
                                do_convert_rgb=True)
    tokenizer.chat_template = chat_template
    return Blip2Processor(images, tokenizer, num_query_tokens=model.cfg.qformer.num_query_tokens,
                          chat_template=chat_template)


def prepare_export(model, out_dir: str | Path, merge: bool, dtype: Optional[str], source: Optional[dict]):
    """What every export target does first: check the output directory, the dtype and the weights, record the
    model's identity, merge LoRA adapters. Returns (out, torch dtype, identity, merged layer count)."""
    out = Path(out_dir).expanduser()
    check_exportable(model, out, merge)
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype] if dtype else model.llm_dtype
    check_finite(model)
    identity = model_identity(model)  # before merging: the trained weights (projection + adapters) as saved
    identity.update(source or {})
    merged = merge_adapters(model.llm) if has_adapters(model.llm) else 0
    if merged:
        log.info("merged the LoRA adapters of %d layers into the LLM weights", merged)
        check_finite(model)  # a merge in 16 bits can overflow
    return out, torch_dtype, identity, merged


def export_blip2(model, out_dir: str | Path, merge: bool = False, dtype: Optional[str] = None,
                 source: Optional[dict] = None) -> ExportReport:
    """Write `model` (weights as loaded: projection / adapters from `model.ckpt`) as a transformers BLIP-2
    directory. `merge`: fold LoRA adapters into the LLM first (in place). `dtype`: fp32 | bf16 | fp16 (default:
    the LLM's). `source` (e.g. the config file and its SHA-256) goes into skingpt4_export.json with the model's
    identity (variant, checkpoint, projection SHA-256: what a served answer's record names)."""
    from transformers import Blip2ForConditionalGeneration

    out, torch_dtype, identity, merged = prepare_export(model, out_dir, merge, dtype, source)
    tokenizer = load_tokenizer(model.cfg.llm_model, model.cfg.tokenizer.pad_token)
    processor = build_processor(model, tokenizer, chat_template_jinja(model.template))
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vocab_size = max(model.llm.config.vocab_size, len(tokenizer))
    config = blip2_config(model, vocab_size, image_token_id, torch_dtype)
    with torch.device("meta"):
        hf = Blip2ForConditionalGeneration(config)
    state = blip2_state_dict(model, vocab_size, torch_dtype)
    expected = set(hf.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:  # a part of our model that the format has no place for (or the reverse)
        raise ExportError(f"the model does not map onto Blip2ForConditionalGeneration: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    hf.load_state_dict(state, strict=True, assign=True)
    if model.llm.generation_config is not None:
        hf.generation_config = model.llm.generation_config
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out, max_shard_size="5GB")
    processor.save_pretrained(out)
    save_checkpoint(out / PROJECTION_FILE, {f"llama_proj.{k}": v for k, v in model.llama_proj.state_dict().items()})
    info = {"format": 1, "variant": model.cfg.variant, "template": model.template.name,
            "image_token": IMAGE_TOKEN, "image_token_id": image_token_id, "num_query_tokens":
            model.cfg.qformer.num_query_tokens, "vocab_size": vocab_size, "merged_lora_layers": merged,
            "dtype": str(torch_dtype).replace("torch.", ""), "stop_strings": list(model.template.stop_strings),
            "model": identity}
    (out / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=1))
    log.info("exported a transformers BLIP-2 model to '%s' (<image> = token %d, vocabulary %d)", out,
             image_token_id, vocab_size)
    return ExportReport(out, image_token_id, vocab_size, merged, info["dtype"])


def read_export_info(directory: str | Path) -> dict:
    path = Path(directory) / EXPORT_INFO_FILE
    if not path.is_file():
        raise ExportError(f"'{directory}' is not a SkinGPT-4 export (no {EXPORT_INFO_FILE}); make one with "
                          "python -m skingpt4.export --cfg-path ... --out DIR")
    return json.loads(path.read_text())
