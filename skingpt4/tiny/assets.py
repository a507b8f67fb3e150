"""Tiny pretrained SkinGPT-4 assets in the real file formats, built on a CPU in about a minute, no download:

    python -m skingpt4.tiny --out tiny_assets

  eva_vit_g.pth         the tiny vision encoder (bare EVA state dict, one block more than used, as the release);
                        seeded random weights, frozen (as EVA-ViT-g is frozen in BLIP-2)
  blip2_pretrained.pth  LAVIS format: the tiny Q-Former + query tokens + ln_vision, pretrained on the synthetic
                        world (encoders.py), with the text-only parts and `t5_proj` that loading must skip
  llm/                  a tiny LlamaForCausalLM pretrained on clinical conversations (corpus.py, llm.py)
                        and its sentencepiece BPE tokenizer, trained here on the same corpus
  projection.pth        a fixed random (untrained) projection in the SkinGPT-4 checkpoint format
  build.json            the recipe, its fingerprint and what the build measured (probe, losses)

The build is seeded (the same recipe on the same torch version and thread count gives the same files) and
cached: when `--out` already holds a build of the same recipe fingerprint (recipe + the source of the modules
and data files that define the world), nothing is rebuilt. docs/model.md ("The tiny model") says what the
tiny model is and is not; it is not a medical model.
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from skingpt4.models.eva_vit import VisionConfig, build_eva_vit
from skingpt4.models.qformer import QFormerConfig, ours_to_lavis
from skingpt4.tiny.encoders import EncoderRecipe, TinyEncoders, pretrain_encoders, probe_world
from skingpt4.tiny.llm import LLMRecipe

TINY_VISION = VisionConfig(image_size=224, patch_size=14, width=64, depth=2, num_heads=4, mlp_hidden=128)
TINY_QFORMER = QFormerConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
TINY_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=1024, rms_norm_eps=1e-6)
BUILD_FILE = "build.json"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# What defines the tiny world (paths inside the package): a change to any of these makes a new recipe fingerprint
# (and a rebuild).
WORLD_SOURCES = ["tiny/assets.py", "tiny/world.py", "tiny/encoders.py", "tiny/corpus.py", "tiny/corpus.json",
                 "tiny/llm.py", "prompting/templates.py", "prompting/clinical.py", "prompting/prompts/step1.txt",
                 "prompting/prompts/step2.txt", "prompting/prompts/clinical.txt", "common/classes.json",
                 "common/concepts.json"]


@dataclass
class TinyRecipe:
    seed: int = 0
    pretrain: bool = True            # False: random encoders and LLM (plumbing only, seconds)
    vocab_size: int = 1000
    tokenizer_dialogues: int = 3000  # sampled dialogues whose text trains the tokenizer
    encoders: EncoderRecipe = field(default_factory=EncoderRecipe)
    llm: LLMRecipe = field(default_factory=LLMRecipe)

    @classmethod
    def small(cls, seed: int = 0) -> "TinyRecipe":
        """A smaller version of the same world for the test suite (about half the build time)."""
        return cls(seed=seed, encoders=EncoderRecipe(images=800, steps=300), llm=LLMRecipe(steps=150))


def fingerprint(recipe: TinyRecipe) -> str:
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(recipe), sort_keys=True).encode())
    digest.update(f"torch {torch.__version__}".encode())
    for name in WORLD_SOURCES:
        digest.update(name.encode() + b"\0" + (PACKAGE_ROOT / name).read_bytes())
    return digest.hexdigest()


def is_built(out_dir: str | Path, recipe: TinyRecipe) -> bool:
    build = Path(out_dir) / BUILD_FILE
    try:
        return json.loads(build.read_text())["fingerprint"] == fingerprint(recipe)
    except (OSError, ValueError, KeyError):
        return False


# ---------------------------------------------------------------------------------------------- parts
def train_tokenizer(out_dir: Path, lines: list[str], vocab_size: int) -> Path:
    """A Llama-style sentencepiece BPE model (unk=0, bos=1, eos=2, byte fallback), deterministic."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, num_threads=1, hard_vocab_limit=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True, split_digits=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2,
    )
    path = out_dir / "tokenizer.model"
    path.write_bytes(model.getvalue())
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "add_bos_token": True, "add_eos_token": False, "legacy": True, "model_max_length": 1024}, indent=1))
    return path


def tiny_corpus(seed: int = 0, dialogues: int = 3000) -> str:
    """The text the tiny tokenizers are trained on: distinct sampled dialogues of the clinical corpus, one a line."""
    from skingpt4.tiny.corpus import Corpus

    return "\n".join(Corpus().tokenizer_lines(dialogues, seed)) + "\n"


def write_tiny_tokenizer(out_dir: str | Path) -> int:
    """The tiny tokenizer alone (tokenizer.model + tokenizer_config.json) in `out_dir`; returns its vocabulary size.
    Enough for token ids when the LLM itself is made with random weights (benchmarks/gpu_acceptance.py)."""
    import sentencepiece as spm

    recipe = TinyRecipe()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(out, tiny_corpus(recipe.seed, recipe.tokenizer_dialogues).splitlines(), recipe.vocab_size)
    return spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size()


def save_encoders(encoders: TinyEncoders, out: Path, seed: int) -> None:
    """eva_vit_g.pth (EVA names, one extra unused block) and blip2_pretrained.pth (LAVIS names + extras)."""
    vit_sd = {k: v for k, v in encoders.visual_encoder.state_dict().items() if not k.startswith("norm.")}
    torch.manual_seed(seed + 1)
    extra = build_eva_vit(dataclasses.replace(TINY_VISION, depth=TINY_VISION.depth + 1)).state_dict()
    vit_sd.update({k: v for k, v in extra.items() if k.startswith(f"blocks.{TINY_VISION.depth}.")})
    torch.save(vit_sd, out / "eva_vit_g.pth")
    hidden = TINY_QFORMER.hidden_size
    blip2 = ours_to_lavis(encoders.qformer.state_dict())
    blip2.update({
        "query_tokens": encoders.query_tokens.detach().clone(),
        "ln_vision.weight": encoders.visual_encoder.norm.weight.detach().clone(),
        "ln_vision.bias": encoders.visual_encoder.norm.bias.detach().clone(),
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


class _Progress:
    """One progress bar per training stage, on stderr (tqdm), with the running loss."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def stage(self, total: int, what: str):
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=what, unit="step", disable=not self.enabled, file=sys.stderr, leave=True)
        losses: list[float] = []

        def update(step: int, loss: float) -> None:
            losses.append(loss)
            bar.update(1)
            if step % 10 == 0 or step == total:
                bar.set_postfix(loss=f"{loss:.3f}")
            if step == total:
                bar.close()
        return update, losses


# ---------------------------------------------------------------------------------------------- build
def build_tiny_assets(out_dir: str | Path, seed: int = 0, recipe: Optional[TinyRecipe] = None,
                      progress: bool = False, log=None) -> Path:
    """Build (or find already built) the tiny assets of `recipe` (default: the full recipe with `seed`)."""
    recipe = recipe or TinyRecipe(seed=seed)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Two processes building into one folder (test sessions side by side, the main job beside the tests) would
    # tear each other's half-written files: the build holds an exclusive lock on a file beside the folder, and the
    # second process finds the first one's build done.
    with open(out.with_name(f".{out.name}.lock"), "a") as lock:  # hidden; ignored by git for tiny_assets/
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_unless_built(out, recipe, progress, log)


def _build_unless_built(out: Path, recipe: TinyRecipe, progress: bool, log) -> Path:
    if is_built(out, recipe):
        (log or (lambda m: None))(f"tiny assets in {out} are up to date (recipe {fingerprint(recipe)[:12]})")
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "llm").mkdir(parents=True)
    with torch.random.fork_rng():
        report = _build(partial, recipe, _Progress(progress))
    (partial / "README.txt").write_text(
        "Tiny SkinGPT-4 assets: a frozen vision encoder and Q-Former and a tiny Llama pretrained on a synthetic "
        "world, for the tests, the main job and the tiny demo. Not a medical model. Made by "
        "`python -m skingpt4.tiny`; build.json says how.\n")
    (partial / BUILD_FILE).write_text(json.dumps({"fingerprint": fingerprint(recipe),
                                                  "recipe": dataclasses.asdict(recipe), **report}, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def _build(out: Path, recipe: TinyRecipe, progress: _Progress) -> dict:
    from skingpt4.models.build import build_model
    from skingpt4.tiny.corpus import Corpus
    from skingpt4.tiny.llm import SlotCodes, oracle_check, pretrain_llm
    from skingpt4.prompting.clinical import CLINICAL_PROMPTS

    started, report = time.perf_counter(), {}
    torch.manual_seed(recipe.seed)
    # Encoders: the frozen random vision encoder, then (pretrained) Q-Former + query tokens + ln_vision.
    if recipe.pretrain:
        update, losses = progress.stage(recipe.encoders.steps, "tiny Q-Former on the synthetic world")
        encoders = pretrain_encoders(TINY_VISION, TINY_QFORMER, recipe.encoders, recipe.seed, update)
        report["encoder_loss"] = {"first": losses[0], "last": sum(losses[-20:]) / len(losses[-20:])}
    else:
        encoders = TinyEncoders(TINY_VISION, TINY_QFORMER).eval()
    report["seconds_encoders"] = time.perf_counter() - started
    report["probe_held_out"] = probe_world(encoders, TINY_VISION.image_size, seed=recipe.seed + 7)
    report["seconds_probe"] = time.perf_counter() - started - report["seconds_encoders"]
    report["probe_chance"] = {"classes": 1 / 16, "concepts": 1 / 48}
    save_encoders(encoders, out, recipe.seed)

    # A fixed untrained projection in the SkinGPT-4 checkpoint format.
    proj = torch.nn.Linear(TINY_QFORMER.hidden_size, TINY_LLM["hidden_size"])
    torch.save({"model": {"llama_proj.weight": proj.weight.detach(), "llama_proj.bias": proj.bias.detach()},
                "epoch": 0}, out / "projection.pth")

    # Tokenizer and LLM: a SkinGPT-4 of random weights over the new tokenizer (the one assembly path), whose LLM
    # is pretrained here, reading image slots through the model's own `embed`.
    corpus = Corpus()
    train_tokenizer(out / "llm", corpus.tokenizer_lines(recipe.tokenizer_dialogues, recipe.seed), recipe.vocab_size)
    torch.manual_seed(recipe.seed)
    model = build_model({"variant": "tiny", "llm_model": str(out / "llm"), "ckpt": None, "device": "cpu",
                         "llm_precision": "fp32"}, random_llm_shapes=TINY_LLM)
    llm = model.llm
    llm_started = time.perf_counter()
    if recipe.pretrain:
        codes = SlotCodes(corpus.cues, TINY_LLM["hidden_size"], recipe.seed)
        update, losses = progress.stage(recipe.llm.steps, "tiny LLM on the clinical corpus")
        pretrain_llm(model, corpus, codes, recipe.llm, recipe.seed, update)
        report["llm_loss"] = {"first": losses[0], "last": sum(losses[-20:]) / len(losses[-20:])}
        report["seconds_llm"] = time.perf_counter() - llm_started
        check = oracle_check(model, corpus, codes, CLINICAL_PROMPTS[0])
        report["llm_reads_clean_slot_accuracy"] = check["accuracy"]
        report["llm_names_class_from_concepts_accuracy"] = check["from_concepts_accuracy"]
        report["llm_example_reply"] = next(iter(check["replies"].values()))
    llm.save_pretrained(out / "llm")
    report["seconds"] = time.perf_counter() - started
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tiny_assets", help="output directory (default: tiny_assets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="the test suite's smaller recipe")
    parser.add_argument("--random", action="store_true", help="no pretraining: random weights (plumbing only)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    recipe = TinyRecipe.small(args.seed) if args.small else TinyRecipe(seed=args.seed)
    recipe.pretrain = not args.random
    out = build_tiny_assets(args.out, recipe=recipe, progress=not args.no_progress, log=print)
    build = json.loads((out / BUILD_FILE).read_text())
    probe = build["probe_held_out"]
    print(f"tiny SkinGPT-4 assets in {out} (recipe {build['fingerprint'][:12]}, built in {build['seconds']:.0f} s)")
    print(f"  Q-Former outputs, held-out nearest-centroid probe: lesion classes {probe['classes']:.1%} "
          f"(chance {1 / 16:.1%}), concept glyphs {probe['concepts']:.1%} (chance {1 / 48:.1%})")
    if "llm_loss" in build:
        print(f"  LLM loss {build['llm_loss']['first']:.2f} -> {build['llm_loss']['last']:.3f}; given a clean image "
              f"code it names the class in {build['llm_reads_clean_slot_accuracy']:.0%} of the classes, e.g. "
              f"{build['llm_example_reply']!r}")


if __name__ == "__main__":
    main()
