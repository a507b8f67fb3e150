"""Ask a served SkinGPT-4 about a skin photo and print the local CLI's JSON / Markdown (docs/scaling.md,
"Serving with vLLM").

    python -m skingpt4.export --cfg-path eval_configs/skingpt4_llama2_13bchat.yaml --target vllm --out exports/13b
    bash scripts/serve_vllm.sh exports/13b --tensor-parallel-size 2       # vllm serve exports/13b/llm ...
    python -m skingpt4.chat.remote --server http://127.0.0.1:8000/v1 --export-dir exports/13b --image photo.jpg --clinical

The photo is encoded here (vision encoder, Q-Former and projection from the export's client file) and every
question is laid out exactly as the local engine lays it out, `[text | image | text]`; those prompt embeddings go
to vLLM's `/v1/completions` (`prompt_embeds`, the server started with `--enable-prompt-embeds`), which runs the
LLM and returns the generated token ids. Before anything is sent, the server's `/v1/models` must list the
export's served model name (a hash of the model identity). The record beside the answers is the local CLI's
(variant, checkpoint, projection SHA-256, chat template) plus `server` and `served_model`. The calibrated
differential is not served: it needs the likelihood of each class's answer (prompt logprobs), which vLLM does
not give for prompt embeddings (run `python -m skingpt4.chat` for it). The embeddings go to `--server` and
nowhere else (no proxy, no redirect); nothing is written to disk.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Optional

from skingpt4.chat.build import ChatRunConfig
from skingpt4.chat.cli import add_decoding_arguments, answer_questions, decoding_from_args, format_answers
from skingpt4.chat.engine import ChatInputError
from skingpt4.chat.http_client import ServerAddress
from skingpt4.chat.provenance import SYNTHETIC_NOTE, package_version, seeded
from skingpt4.common.config import ConfigError
from skingpt4.common.fingerprint import sha256_file
from skingpt4.common.images import ImageError, load_image
from skingpt4.prompting.clinical import CLINICAL_PROMPTS

DEFAULT_URL = "http://127.0.0.1:8000/v1"
MODEL_KEYS = ("variant", "llm_model", "config", "config_sha256", "model_config_sha256", "checkpoint",
              "checkpoint_sha256", "projection_sha256")
NOT_SERVED = ("the calibrated differential is not served: it needs prompt logprobs of each class's answer, which "
              "vLLM does not return for prompt embeddings; run python -m skingpt4.chat for it")


def remote_provenance(identity: dict, url: str, served_model: str, image_path: str, template: str) -> dict:
    """The local CLI's provenance fields for a served answer (the model fields from the export's manifest)."""
    record = {key: identity.get(key) for key in MODEL_KEYS}
    record.update(image_sha256=sha256_file(image_path), chat_template=template, skingpt4_version=package_version(),
                  created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"), server=url,
                  served_model=served_model, differential=None, differential_note=NOT_SERVED)
    if identity.get("synthetic"):
        record["note"] = SYNTHETIC_NOTE
    return record


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skingpt4.chat.remote", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", "--url", dest="server", default=DEFAULT_URL,
                        help=f"the server's OpenAI API base (default {DEFAULT_URL}; --url is the old name)")
    parser.add_argument("--export-dir", required=True, help="the --target vllm export the server serves")
    parser.add_argument("--image", required=True, help="the skin photo")
    parser.add_argument("--device", help="where the client encodes the photo: cpu (default), cuda or cuda:N")
    one_shot = parser.add_mutually_exclusive_group()
    one_shot.add_argument("--clinical", action="store_true", help="the four clinical questions (the default)")
    one_shot.add_argument("--ask", action="append", metavar="QUESTION", help="ask this (repeatable)")
    parser.add_argument("--format", choices=("markdown", "json"), default="json")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds for each whole answer (a total deadline, not a per-read timeout)")
    add_decoding_arguments(parser, "decoding (default: the original demo's sampling)", beams=False)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None, out=sys.stdout) -> int:
    args = parse_args(argv)
    try:
        from skingpt4.chat.remote_engine import RemoteChatEngine

        address = ServerAddress.parse(args.server)
        if not address.is_loopback:
            print(f"note: the photo's embeddings are sent to {address.host}", file=sys.stderr)
        decoding = seeded(decoding_from_args(args, ChatRunConfig()))  # a sampled answer records its seed
        image = load_image(args.image)  # before the client model loads
        engine = RemoteChatEngine.from_export(args.export_dir, args.server, device=args.device or "cpu",
                                              timeout=args.timeout)
        conv = engine.new_conversation(image)
        answers = answer_questions(engine, conv, args.ask or CLINICAL_PROMPTS, decoding)
        record = remote_provenance(engine.identity, address.url, engine.served_model, args.image,
                                   engine.template.name)
    except (ConfigError, ChatInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImageError as err:
        print(f"error: cannot use the image '{args.image}' ({err.reason}): {err.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(format_answers(answers, args.image, args.format, decoding, engine.template.name, provenance=record),
          file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
