"""Tiny random-weight assets in the real file formats, so the whole pipeline runs in seconds on a CPU with no
download: `eva_vit_g.pth` (bare EVA state dict, one block more than used, as the release), a LAVIS-format
`blip2_pretrained.pth` (with the text-only Q-Former parts and `t5_proj` that loading must skip), a SkinGPT-4-format
`projection.pth` (used by the tiny chat/eval configs so their answers are reproducible), and `llm/`, a
random `LlamaForCausalLM` with a sentencepiece BPE tokenizer trained here on a small built-in corpus.

    python -m skingpt4.models.tiny --out tiny_assets

The tiny model checks the plumbing; it knows nothing about skin.
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch

from skingpt4.models.eva_vit import VisionConfig, build_eva_vit
from skingpt4.models.qformer import QFormerConfig, build_qformer, ours_to_lavis

TINY_VISION = VisionConfig(image_size=224, patch_size=14, width=64, depth=2, num_heads=4, mlp_hidden=128)
TINY_QFORMER = QFormerConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
TINY_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=1024, rms_norm_eps=1e-6)
TINY_VOCAB = 600

# Words the tokenizer should know as whole pieces: the prompt formats, the four clinical prompts, concepts, classes.
_CORPUS_LINES = [
    "###Human: <Img><ImageHere></Img> Could you describe the medical concepts of skin disease in this image for me? ###Assistant: ",
    "###Human: <Img><ImageHere></Img> What's wrong with my skin? ###Assistant: ",
    "###Human: <Img><ImageHere></Img> Could you describe the skin disease in this image for me? ###Assistant: ",
    "Please provide a paragraph listing additional features you observed in the image.",
    "Based on the previous information, please provide a detailed explanation of the cause of this skin disease.",
    "What treatment and medication should be recommended for this case?",
    "[INST] <<SYS>> You are a helpful dermatology assistant. <</SYS>> [/INST] ### Instruction: ### Response:",
    "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. "
    "Please answer my questions.",
    "This lesion shows erythema, plaque and scale. The lesion shows papule, pustule, nodule, macule, patch, ulcer, "
    "crust, erosion, vesicle, bulla, atrophy, scar, telangiectasia, hyperpigmentation, hypopigmentation, purpura.",
    "The skin disease in this image is likely acne and rosacea, malignant lesions, dermatitis, bullous disease, "
    "bacterial infections, light diseases, connective tissue diseases, benign tumors, melanoma skin cancer, nevi, "
    "moles, fungal infections, psoriasis and lichen planus, infestations and bites, urticaria hives, vascular "
    "tumors, herpes, or others. It is not a diagnosis; please consult a qualified dermatologist.",
]


def tiny_corpus() -> str:
    return "\n".join(_CORPUS_LINES * 20) + "\n"


def train_tokenizer(out_dir: Path) -> Path:
    """A Llama-style sentencepiece BPE model (unk=0, bos=1, eos=2, byte fallback), deterministic."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus().splitlines()), model_writer=model, vocab_size=TINY_VOCAB,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, num_threads=1, hard_vocab_limit=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True, split_digits=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2,
    )
    path = out_dir / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


def write_tiny_tokenizer(out_dir: str | Path) -> int:
    """The tiny tokenizer alone (tokenizer.model + tokenizer_config.json) in `out_dir`; returns its vocabulary size.
    Enough for token ids when the LLM itself is made with random weights (benchmarks/gpu_acceptance.py)."""
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(out)
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "add_bos_token": True, "add_eos_token": False, "legacy": True, "model_max_length": 1024}, indent=1))
    return spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size()


def build_tiny_assets(out_dir: str | Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    (out / "llm").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    # EVA file: one unused block more than the model uses, like the released 40-block eva_vit_g.pth.
    vit = build_eva_vit(VisionConfig(**{**TINY_VISION.__dict__, "depth": TINY_VISION.depth + 1}))
    vit_sd = {k: v for k, v in vit.state_dict().items() if not k.startswith("norm.")}  # ln_vision is BLIP-2's
    torch.save(vit_sd, out / "eva_vit_g.pth")

    qformer = build_qformer(TINY_QFORMER, TINY_VISION.width)
    blip2 = ours_to_lavis(qformer.state_dict())
    width, hidden = TINY_VISION.width, TINY_QFORMER.hidden_size
    blip2.update({
        "query_tokens": torch.randn(1, TINY_QFORMER.num_query_tokens, hidden) * 0.02,
        "ln_vision.weight": 1 + 0.1 * torch.randn(width), "ln_vision.bias": 0.1 * torch.randn(width),
        # parts of the real file that SkinGPT-4 does not use:
        "Qformer.bert.embeddings.word_embeddings.weight": torch.randn(100, hidden) * 0.02,
        "Qformer.bert.embeddings.position_embeddings.weight": torch.randn(64, hidden) * 0.02,
        "Qformer.bert.embeddings.position_ids": torch.arange(64)[None],
        "Qformer.bert.encoder.layer.0.intermediate.dense.weight": torch.randn(TINY_QFORMER.intermediate_size, hidden),
        "Qformer.bert.encoder.layer.0.output.dense.weight": torch.randn(hidden, TINY_QFORMER.intermediate_size),
        "Qformer.cls.predictions.bias": torch.zeros(100),
        "t5_proj.weight": torch.randn(32, hidden) * 0.02, "t5_proj.bias": torch.zeros(32),
    })
    torch.save({"model": blip2}, out / "blip2_pretrained.pth")

    # A fixed projection in the SkinGPT-4 checkpoint format, so chat with the tiny model is reproducible.
    proj = torch.nn.Linear(TINY_QFORMER.hidden_size, TINY_LLM["hidden_size"])
    torch.save({"model": {"llama_proj.weight": proj.weight.detach(), "llama_proj.bias": proj.bias.detach()},
                "epoch": 0}, out / "projection.pth")

    vocab = write_tiny_tokenizer(out / "llm")
    config = LlamaConfig(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=None, **TINY_LLM)
    LlamaForCausalLM(config).save_pretrained(out / "llm")
    (out / "README.txt").write_text("Tiny random-weight SkinGPT-4 assets for tests and the plumbing demo; not a "
                                    "medical model. Made by `python -m skingpt4.models.tiny`.\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tiny_assets", help="output directory (default: tiny_assets)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"tiny SkinGPT-4 assets written to {build_tiny_assets(args.out, args.seed)}")


if __name__ == "__main__":
    main()
