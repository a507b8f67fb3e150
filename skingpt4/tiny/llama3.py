"""A tiny Llama-3-style LLM, made locally, for the `tiny_llama3` variant (skingpt4/models/variants/tiny_llama3.yaml):
a byte-level BPE tokenizer (`tokenizer.json`) with Llama-3's special tokens and no unk token, and a random
`LlamaForCausalLM` whose BOS is <|begin_of_text|> and EOS <|eot_id|>. It shows that a new LLM family is one
variant YAML plus one template registration (`llama3_chat`); it knows nothing about skin.

    python -m skingpt4.tiny.llama3 --out tiny_assets/llm_llama3
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from skingpt4.tiny.assets import TINY_LLM, tiny_corpus

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|finetune_right_pad_id|>"]
VOCAB = 700


def train_byte_level_tokenizer(out_dir: Path):
    """Deterministic byte-level BPE (as Llama-3's): every byte is a token, so nothing is ever unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())  # no unk_token: byte-level pieces cover every input
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(tiny_corpus().splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   model_max_length=TINY_LLM["max_position_embeddings"])
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_llama3(out_dir: str | Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_byte_level_tokenizer(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=None, **TINY_LLM)
    LlamaForCausalLM(config).save_pretrained(out)
    (out / "README.txt").write_text("Tiny random Llama-3-style LLM for tests; not a medical model. Made by "
                                    "`python -m skingpt4.tiny.llama3`.\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tiny_assets/llm_llama3", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"tiny Llama-3-style LLM written to {build_tiny_llama3(args.out, args.seed)}")


if __name__ == "__main__":
    main()
