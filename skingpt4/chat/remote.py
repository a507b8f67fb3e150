"""Ask a served SkinGPT-4 (vLLM's OpenAI-compatible server, `bash scripts/serve_vllm.sh DIR`) about a skin photo
and print the same answers JSON / Markdown as the local CLI (docs/scaling.md, "Serving").

    python -m skingpt4.chat.remote --image photo.jpg --clinical --format json
    python -m skingpt4.chat.remote --url http://127.0.0.1:8000/v1 --image photo.jpg --ask "What's wrong with my skin?"

One conversation per run: every question is a `/v1/chat/completions` request carrying the photo (as a data URL in
the first user message) and the earlier turns; the server renders them with the exported chat template and puts
the 32 image tokens first (docs/scaling.md, "What vLLM serves"). The record beside the answers is the local
CLI's: with `--export-dir` (the served directory) it names the exported model (variant, checkpoint, projection
SHA-256, chat template), without it those fields are null; `server` and `served_model` say who answered. The
calibrated differential is not there: it needs the model's likelihood of every class's answer, which the chat API
does not give (run `python -m skingpt4.chat` for it). The photo goes to `--url` and nowhere else; nothing is
written to disk.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import time
from datetime import datetime, timezone
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional, Sequence

from skingpt4.chat.build import ChatRunConfig
from skingpt4.chat.cli import add_decoding_arguments, decoding_from_args, format_answers
from skingpt4.chat.decoding import DecodingConfig
from skingpt4.chat.provenance import SYNTHETIC_NOTE, package_version, seeded
from skingpt4.common import registry
from skingpt4.common.config import ConfigError
from skingpt4.common.fingerprint import sha256_file
from skingpt4.common.images import ImageError, load_image
from skingpt4.prompting.clinical import CLINICAL_PROMPTS
from skingpt4.prompting.templates import ChatTemplate

DEFAULT_URL = "http://127.0.0.1:8000/v1"
SERVED_MODEL_NAME = "skingpt4"  # scripts/serve_vllm.sh serves the export under this name


class RemoteError(ConfigError):
    """The server could not be reached or refused a request; the message says what to do."""


def image_data_url(path: str) -> str:
    """The photo (EXIF-oriented RGB, as the local CLI reads it) as a PNG data URL."""
    buffer = io.BytesIO()
    load_image(path).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def sampling_params(decoding: DecodingConfig, template: ChatTemplate) -> dict:
    """DecodingConfig -> OpenAI chat parameters (+ vLLM's `top_k`, `repetition_penalty`, `add_special_tokens`)."""
    if decoding.num_beams > 1:
        raise ConfigError("beam search is not part of the OpenAI chat API; use --greedy or sampling")
    params = {"max_tokens": decoding.max_new_tokens, "repetition_penalty": decoding.repetition_penalty,
              "add_special_tokens": False}  # the exported chat template writes BOS itself
    if decoding.do_sample:
        params.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k or -1)
    else:
        params.update(temperature=0.0)  # greedy
    if decoding.seed is not None:
        params["seed"] = decoding.seed
    if template.stop_strings:
        params["stop"] = list(template.stop_strings)
    return params


def messages_for(history: Sequence[tuple[str, str]], question: str, image_url: str) -> list[dict]:
    """OpenAI chat messages: the photo goes with the first question, as in SkinGPT-4's prompt."""
    questions = [q for q, _ in history] + [question]
    messages = []
    for i, asked in enumerate(questions):
        content = ([{"type": "image_url", "image_url": {"url": image_url}}] if i == 0 else []) + \
                  [{"type": "text", "text": asked}]
        messages.append({"role": "user", "content": content})
        if i < len(history):
            messages.append({"role": "assistant", "content": history[i][1]})
    return messages


def post_json(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:500]
        raise RemoteError(f"the server at {url} refused the request (HTTP {err.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise RemoteError(f"cannot reach the server at {url} ({reason}); start it with "
                          "bash scripts/serve_vllm.sh EXPORT_DIR (docs/scaling.md)") from None


def ask_remote(url: str, model: str, image_url: str, questions: Sequence[str], decoding: DecodingConfig,
               template: ChatTemplate, timeout: float = 600.0) -> list[dict]:
    """The answers in the local CLI's form (question, answer, seconds, new_tokens, stopped_by, dropped_turns)."""
    endpoint = url.rstrip("/") + "/chat/completions"
    params = sampling_params(decoding, template)
    history: list[tuple[str, str]] = []
    answers = []
    for question in questions:
        start = time.perf_counter()
        reply = post_json(endpoint, {"model": model, "messages": messages_for(history, question, image_url),
                                     **params}, timeout)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"the server at {endpoint} answered without choices[0].message: "
                              f"{json.dumps(reply)[:300]}") from None
        if choice.get("finish_reason") == "length":
            stopped_by = "max_new_tokens"
        else:  # vLLM reports the matched stop string in stop_reason, None for the EOS token
            stopped_by = "stop_string" if isinstance(choice.get("stop_reason"), str) else "eos"
        answer = template.clean_reply(text)
        history.append((question, answer))
        answers.append({"question": question, "answer": answer, "seconds": round(time.perf_counter() - start, 3),
                        "new_tokens": int((reply.get("usage") or {}).get("completion_tokens", 0)),
                        "stopped_by": stopped_by, "dropped_turns": 0})
    return answers


MODEL_KEYS = ("variant", "llm_model", "config", "config_sha256", "model_config_sha256", "checkpoint",
              "checkpoint_sha256", "projection_sha256")


def remote_provenance(export_info: Optional[dict], url: str, model: str, image_path: str, template: str) -> dict:
    """The local CLI's provenance fields for a served answer (model fields from the export's record, or null)."""
    exported = (export_info or {}).get("model", {})
    record = {key: exported.get(key) for key in MODEL_KEYS}
    record.update(image_sha256=sha256_file(image_path), chat_template=template, skingpt4_version=package_version(),
                  created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"), server=url,
                  served_model=model)
    if exported.get("synthetic", exported.get("tiny")):  # "tiny": exports written before the variants said so
        record["note"] = SYNTHETIC_NOTE
    return record


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skingpt4.chat.remote", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server's OpenAI API base (default {DEFAULT_URL})")
    parser.add_argument("--model", default=SERVED_MODEL_NAME, help="the served model name (default skingpt4)")
    parser.add_argument("--export-dir", help="the served export directory: its model and chat template go into the record")
    parser.add_argument("--template", help="the served chat template, for stop strings (default: the export's, "
                                           "else vicuna_v0)")
    parser.add_argument("--image", required=True, help="the skin photo")
    one_shot = parser.add_mutually_exclusive_group()
    one_shot.add_argument("--clinical", action="store_true", help="the four clinical questions (the default)")
    one_shot.add_argument("--ask", action="append", metavar="QUESTION", help="ask this (repeatable)")
    parser.add_argument("--format", choices=("markdown", "json"), default="json")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each answer")
    add_decoding_arguments(parser, "decoding (default: the original demo's sampling)", beams=False)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None, out=sys.stdout) -> int:
    args = parse_args(argv)
    try:
        info = None
        if args.export_dir:
            from skingpt4.export.blip2 import read_export_info

            info = read_export_info(args.export_dir)
        name = args.template or (info or {}).get("template", "vicuna_v0")
        if name not in registry.chat_templates:
            raise ConfigError(registry.unknown_choice_message("--template", name, registry.chat_templates.names()))
        template = registry.chat_templates.get(name)
        decoding = seeded(decoding_from_args(args, ChatRunConfig()))  # a sampled answer records its seed
        parsed = urllib.parse.urlparse(args.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"--url {args.url}: give the server's API base, e.g. {DEFAULT_URL}")
        host = parsed.hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"note: the photo is sent to {host}", file=sys.stderr)
        image_url = image_data_url(args.image)
        answers = ask_remote(args.url, args.model, image_url, args.ask or CLINICAL_PROMPTS, decoding, template,
                             args.timeout)
        record = remote_provenance(info, args.url, args.model, args.image, template.name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImageError as err:
        print(f"error: cannot use the image '{args.image}' ({err.reason}): {err.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(format_answers(answers, args.image, args.format, decoding, template.name, provenance=record), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
