"""Each speed option against its plain path, side by side in one process (docs/performance.md).

    python -m benchmarks.bench_paths                 # small random SkinGPT-4 on a CPU, one thread
    python -m benchmarks.bench_paths --compile       # also the torch.compile'd decoder (~20-40 s to compile)
    python -m benchmarks.bench_paths --device cuda --arch full   # the real size on a GPU

A shared machine's load drifts by more than these options change, so the variants of each comparison run
interleaved (A B C A B C ...) and the figure is the median of each variant's times, with its ratio to the
comparison's first (plain) variant. Same weights for all variants of a comparison.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.timing import interleaved_medians
from skingpt4.chat import ChatEngine, DecodingConfig
from skingpt4.tiny.random_models import build_random_model, fixed_length_replies
from skingpt4.runners.optim import adamw_kernel

ANSWER_WORDS = ("This lesion shows erythema, plaque and scale, papule, pustule, nodule, macule, patch, ulcer, crust, "
                "erosion, vesicle, bulla, atrophy, scar, telangiectasia, hyperpigmentation").split()
LINE = "<Img><ImageHere></Img> Could you describe the medical concepts of skin disease in this image for me?"


def report(title: str, medians: dict) -> list[dict]:
    base = next(iter(medians.values()))
    print(f"\n{title}")
    rows = []
    for name, seconds in medians.items():
        rows.append({"comparison": title, "variant": name, "ms": seconds * 1000, "ratio": seconds / base})
        print(f"  {name:<34} {seconds * 1000:9.2f} ms   x{seconds / base:5.2f} of the time of the first")
    return rows


def samples(model, batch: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    answers = [" ".join(ANSWER_WORDS[: 4 + (7 * i) % len(ANSWER_WORDS)]) * (1 + i % 3) for i in range(batch)]
    return {"queries": torch.randn(batch, 32, model.cfg.qformer.hidden_size, generator=generator),
            "text_input": answers, "prompt": [LINE] * batch}


def train_step(model, batch: dict, **kwargs):
    def step():
        model.zero_grad(set_to_none=True)
        model(batch, **kwargs)["loss"].backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["small", "full"], default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)")
    parser.add_argument("--compile", action="store_true", help="include the compiled decoder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    sdpa = build_random_model(args.arch, args.device)
    eager = build_random_model(args.arch, args.device, {"attn_implementation": "eager"})
    eager.load_state_dict(sdpa.state_dict())
    for m in (sdpa, eager):
        fixed_length_replies(m)
    print(f"# speed options side by side: arch {args.arch}, {device}, {torch.get_num_threads()} thread(s), "
          f"median of {args.rounds} interleaved rounds")
    rows = []
    pixels = torch.randn(8, 3, sdpa.cfg.vision.image_size, sdpa.cfg.vision.image_size).to(device)
    with torch.no_grad():
        rows += report("encode, batch 8: attention", interleaved_medians(
            {"sdpa": lambda: sdpa.encode_image(pixels), "eager": lambda: eager.encode_image(pixels)}, device,
            args.rounds))
    batch16 = samples(sdpa, 16)
    rows += report("train step fwd+bwd, batch 16, cached features: attention", interleaved_medians(
        {"sdpa": train_step(sdpa, batch16), "eager": train_step(eager, batch16)}, device, args.rounds))
    rows += report("train step fwd+bwd, batch 16, cached features: batch layout", interleaved_medians(
        {"padded": train_step(sdpa, batch16), "packed 512": train_step(sdpa, batch16, pack_tokens=512),
         "packed 2048": train_step(sdpa, batch16, pack_tokens=2048)}, device, args.rounds))
    rows += report("AdamW step, projection-sized parameters (768 x 5120 + 5120)", adamw(device, args.rounds))
    rows += report("decode 64 tokens, batch 1, turn 1 (ChatEngine.ask)", decode(sdpa, device, args, 1))
    rows += report("decode 64 tokens, batch 8, turn 1 (ChatEngine.ask_batch)", decode(sdpa, device, args, 8))
    with torch.no_grad():
        vit = {}
        for name, dtype in (("fp32 ViT", torch.float32), ("bf16 ViT", torch.bfloat16)):
            model = build_random_model(args.arch, args.device, {"vit_precision": name[:4]})
            model.load_state_dict(sdpa.state_dict())
            vit[name] = (lambda m: (lambda: m.encode_image(pixels)))(model)
        rows += report("encode, batch 8: ViT precision", interleaved_medians(vit, device, args.rounds))


def adamw(device: torch.device, rounds: int) -> dict:
    shapes = [(5120, 768), (5120,)]
    variants = {}
    for impl in ("for_loop", "foreach", "fused"):
        params = [torch.nn.Parameter(torch.randn(s, device=device)) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **adamw_kernel(impl, params))
        variants[impl] = optimizer.step
    return interleaved_medians(variants, device, rounds)


def decode(model, device: torch.device, args, batch: int) -> dict:
    decoding = DecodingConfig(do_sample=False, max_new_tokens=64)
    engines = {"dynamic KV cache": ChatEngine(model), "static KV cache": ChatEngine(model, kv_cache="static")}
    if args.compile:
        engines["static + torch.compile"] = ChatEngine(model, kv_cache="static", compile_decoding=True)
    image = torch.randn(3, model.cfg.vision.image_size, model.cfg.vision.image_size)

    def turn(engine):
        def go():
            convs = [engine.new_conversation(image) for _ in range(batch)]
            if batch == 1:
                engine.ask(convs[0], "Could you describe the skin disease in this image for me?", decoding)
            else:
                engine.ask_batch(convs, ["Could you describe the skin disease in this image for me?"] * batch,
                                 decoding)
        return go

    return interleaved_medians({name: turn(engine) for name, engine in engines.items()}, device, max(3, args.rounds // 3))


if __name__ == "__main__":
    main()
