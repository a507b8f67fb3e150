"""How close an exported BLIP-2 directory is to the model it came from, on one image and question
(docs/scaling.md, "Export" and "What vLLM serves"):

* `exact`: `Blip2ForConditionalGeneration.from_pretrained(DIR)` fed our token layout with the 32 `<image>` tokens
  where `<ImageHere>` is (`blip2_input_ids`): logits max |difference| and greedy tokens, against ours.
* `served`: the same model fed what vLLM's BLIP-2 processor builds from the exported chat template (32 `<image>`
  tokens first, then BOS and the text, `served_prompt_text`): next-token logits difference at the end of the
  prompt, whether the top token agrees, and how many greedy tokens agree.
* `pixels`: the exported image processor against our eval transform on the same photo.

    python -m skingpt4.export.compare --cfg-path eval_configs/skingpt4_tiny.yaml --export-dir DIR --image photo.jpg
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional

import torch

from skingpt4.export.blip2 import read_export_info
from skingpt4.export.prompt import IMAGE_TOKEN, blip2_input_ids, served_prompt_text


def _greedy_ours(model, embeds, attention, n: int) -> list[int]:
    out = model.llm.generate(inputs_embeds=embeds, attention_mask=attention, max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
                             pad_token_id=model.tokenizer.pad_token_id)
    return out[0, -n:].tolist()


def _greedy_hf(hf, pixels, ids: list[int], n: int, pad_id: int) -> list[int]:
    out = hf.generate(pixel_values=pixels, input_ids=torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n,
                      do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None, pad_token_id=pad_id)
    return out[0, len(ids):].tolist()


@torch.no_grad()
def compare(model, export_dir: str, pixels: torch.Tensor, question: str, new_tokens: int = 16,
            image=None) -> dict:
    """Figures for one processed image [1,3,S,S] (and, with `image` a PIL image, the image processors)."""
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    info = read_export_info(export_dir)
    hf = Blip2ForConditionalGeneration.from_pretrained(export_dir, dtype=model.llm_dtype).to(model.device).eval()
    processor = AutoProcessor.from_pretrained(export_dir)
    tokenizer, vocab = processor.tokenizer, model.llm.config.vocab_size
    pixels = pixels.to(model.device)
    lay = model.layout((), question)
    embeds, attention = model.embed([lay.tokens], model.encode_image(pixels))
    ours = model.llm(inputs_embeds=embeds, attention_mask=attention).logits.float()
    ours_tokens = _greedy_ours(model, embeds, attention, new_tokens)

    exact_ids = blip2_input_ids(lay.tokens, info["image_token_id"])
    exact = hf(pixel_values=pixels.to(hf.dtype), input_ids=torch.tensor([exact_ids], device=model.device)).logits
    exact = exact.float()[..., :vocab]
    exact_tokens = _greedy_hf(hf, pixels.to(hf.dtype), exact_ids, new_tokens, tokenizer.pad_token_id)

    text = served_prompt_text(model.template, (), question, tokenizer.bos_token)
    served_ids = ([info["image_token_id"]] * info["num_query_tokens"]
                  + tokenizer(text, add_special_tokens=False).input_ids)
    served = hf(pixel_values=pixels.to(hf.dtype), input_ids=torch.tensor([served_ids], device=model.device)).logits
    served = served.float()[0, -1, :vocab]
    served_tokens = _greedy_hf(hf, pixels.to(hf.dtype), served_ids, new_tokens, tokenizer.pad_token_id)
    ours_last = ours[0, -1]
    agree = next((i for i, (a, b) in enumerate(zip(ours_tokens, served_tokens)) if a != b), len(ours_tokens))
    figures = {
        "exact": {"logits_max_abs_diff": float((ours - exact).abs().max()), "positions": ours.shape[1],
                  "greedy_tokens_equal": ours_tokens == exact_tokens, "greedy_tokens": new_tokens},
        "served": {
            "prompt_tokens_ours": len(lay.tokens), "prompt_tokens_served": len(served_ids),
            "text_tokens_ours": [t for t in lay.tokens if t >= 0][1:],  # without BOS and the image
            "text_tokens_served": served_ids[info["num_query_tokens"] + 1:],
            "next_token_logits_max_abs_diff": float((ours_last - served).abs().max()),
            "next_token_logits_scale": float(ours_last.abs().max()),
            "next_token_kl": float(torch.nn.functional.kl_div(served.log_softmax(-1), ours_last.log_softmax(-1),
                                                              log_target=True, reduction="sum")),
            "top1_equal": int(ours_last.argmax()) == int(served.argmax()),
            "greedy_tokens_agreeing": agree, "greedy_tokens": new_tokens},
    }
    s = figures["served"]
    s["text_tokens_equal"] = s.pop("text_tokens_ours") == s.pop("text_tokens_served")
    if image is not None:
        from skingpt4.common import registry

        ours_px = registry.processors.get("blip2_image_eval")(image_size=model.cfg.vision.image_size)(image)
        theirs_px = processor.image_processor(image, return_tensors="pt")["pixel_values"][0]
        figures["pixels"] = {"max_abs_diff": float((ours_px - theirs_px).abs().max()),
                             "mean_abs_diff": float((ours_px - theirs_px).abs().mean())}
    figures["image_token"] = {"token": IMAGE_TOKEN, "id": info["image_token_id"]}
    return figures


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skingpt4.export.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="the config the export was made from")
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", default="Could you describe the skin disease in this image for me?")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from skingpt4.common import registry
    from skingpt4.common.config import ConfigError, load_config
    from skingpt4.common.images import ImageError, load_image
    from skingpt4.models.build import build_model

    try:
        image = load_image(args.image)
        model = build_model(load_config(args.cfg_path, args.options).model)
        pixels = registry.processors.get("blip2_image_eval")(image_size=model.cfg.vision.image_size)(image)
        figures = compare(model, args.export_dir, pixels[None], args.question, args.new_tokens, image=image)
    except (ConfigError, ImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
