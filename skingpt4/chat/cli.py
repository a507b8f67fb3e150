"""Chat about a skin photo in the terminal, or print the answers to the clinical questions (docs/inference.md).

    python -m skingpt4.chat --cfg-path eval_configs/skingpt4_tiny.yaml --image photo.jpg
    python -m skingpt4.chat --cfg-path eval_configs/skingpt4_tiny.yaml --image photo.jpg --clinical --format json
    python -m skingpt4.chat --cfg-path ... --image photo.jpg --ask "What's wrong with my skin?" --greedy

Interactive commands (never sent to the model): /help, /image PATH (a new photo, new conversation), /reset
(start over with the same photo), /differential (the photo's class probabilities), /quit (or Ctrl-D). A sampling
flag (--temperature, --top-p, --seed) switches sampling on over a greedy config. Nothing is written to disk;
nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import sys
import time
from typing import Optional, TextIO

from PIL import Image

from skingpt4.chat.build import ChatRunConfig, build_engine, read_chat_config
from skingpt4.chat.decoding import DecodingConfig
from skingpt4.chat.calibration_file import read_calibration_file
from skingpt4.chat.differential import DifferentialScorer, calibration_path, class_answers, load_calibration
from skingpt4.chat.engine import ChatEngine, ChatInputError, Conversation
from skingpt4.chat.notices import DISCLAIMER
from skingpt4.chat.provenance import provenance, seeded
from skingpt4.common.config import ConfigError
from skingpt4.common.images import ImageError, load_image
from skingpt4.prompting.clinical import CLINICAL_PROMPTS


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skingpt4.chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="eval config YAML (see eval_configs/)")
    parser.add_argument("--image", required=True, help="the skin photo (jpg, png, webp, ...)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (overrides model.device)")
    one_shot = parser.add_mutually_exclusive_group()
    one_shot.add_argument("--clinical", action="store_true",
                          help="ask the four clinical questions in one conversation, print the answers and exit")
    one_shot.add_argument("--ask", action="append", metavar="QUESTION",
                          help="ask this (repeatable: one conversation), print the answers and exit")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown",
                        help="output of --clinical / --ask (default markdown)")
    add_decoding_arguments(parser, "decoding (default: run.decoding of the config)")
    parser.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. model.template=llama2_chat model.ckpt=my.pth")
    return parser.parse_args(argv)


SAMPLING_FLAGS = (("temperature", "--temperature"), ("top_p", "--top-p"), ("seed", "--seed"))
SEED_RANGE = (0, 2**63 - 1)  # what torch's generators take as a seed (int64)


def add_decoding_arguments(parser: argparse.ArgumentParser, title: str, beams: bool = True) -> None:
    decoding = parser.add_argument_group(title)
    decoding.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    if beams:
        decoding.add_argument("--num-beams", type=int, help="beam search with N beams (implies --greedy)")
    decoding.add_argument("--temperature", type=float, help="sampling temperature (switches sampling on)")
    decoding.add_argument("--top-p", type=float, help="nucleus sampling (switches sampling on)")
    decoding.add_argument("--max-new-tokens", type=int)
    decoding.add_argument("--seed", type=int, help="reproducible sampling (switches sampling on)")


def decoding_from_args(args: argparse.Namespace, run: ChatRunConfig) -> DecodingConfig:
    """The config's decoding with the flags applied. A sampling flag (--temperature, --top-p, --seed) switches
    sampling on over a greedy config, says so on stderr, and the recorded decoding shows it; with an explicit
    --greedy or --num-beams > 1 it is an error, as is a seed torch cannot take."""
    seed = args.seed
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ConfigError(f"--seed must be an integer in [0, 2^63 - 1], got {seed}")
    changes = {key: value for key, value in (("temperature", args.temperature), ("top_p", args.top_p),
                                              ("max_new_tokens", args.max_new_tokens), ("seed", seed),
                                              ("num_beams", getattr(args, "num_beams", None)))
               if value is not None}
    sampling = [flag for key, flag in SAMPLING_FLAGS if getattr(args, key) is not None]
    deterministic = "--greedy" if args.greedy else "--num-beams" if (getattr(args, "num_beams", None) or 1) > 1 else None
    if deterministic and sampling:
        raise ConfigError(f"{', '.join(sampling)} set(s) sampling, but {deterministic} asks for deterministic decoding; "
                          "drop one of them")
    if deterministic:
        changes["do_sample"] = False
    elif sampling and not run.decoding.do_sample:
        changes["do_sample"] = True
        changes["num_beams"] = 1
        print(f"note: sampling switched on by {', '.join(sampling)} (the config decodes greedily)", file=sys.stderr)
    try:
        return dataclasses.replace(run.decoding, **changes)  # validated again by DecodingConfig
    except ValueError as err:
        raise ConfigError(f"decoding options: {err}") from None


def answer_questions(engine: ChatEngine, conv: Conversation, questions, decoding: DecodingConfig) -> list[dict]:
    answers = []
    for question in questions:
        start = time.perf_counter()
        reply = engine.ask(conv, question, decoding)
        report = conv.last_turn
        answers.append({"question": question, "answer": reply, "seconds": round(time.perf_counter() - start, 3),
                        "new_tokens": report.new_tokens, "stopped_by": report.stopped_by,
                        "dropped_turns": report.dropped_turns})
    return answers


def differential_for(engine: ChatEngine, conv: Conversation, image: Optional[Image.Image] = None) -> dict:
    """The differential of the conversation's image (docs/inference.md): every class with its probability,
    whether it is calibrated, and whether (and why) the model abstains: always when uncalibrated (no calibration
    file next to model.ckpt), on a blank photo, on an image unlike the calibration's, and below the threshold."""
    model = engine.model
    calibration = load_calibration(model.cfg.ckpt, model)
    scorer = (DifferentialScorer(model, class_answers(), calibration.question, calibration.length_norm)
              if calibration else DifferentialScorer(model, class_answers()))
    result = scorer.assess(conv.image_embeds, calibration, image)
    return {**result.as_json(), "calibration_file": str(calibration_path(model.cfg.ckpt)) if calibration else None}


def format_answers(answers: list[dict], image: str, fmt: str, decoding: DecodingConfig, template: str,
                   differential: Optional[dict] = None, provenance: Optional[dict] = None) -> str:
    """provenance: which model, config, checkpoint and image (their SHA-256), version and time; with the
    recorded seed in `decoding`, enough to reproduce every answer."""
    provenance = provenance or {}
    if fmt == "json":
        return json.dumps({"image": image, "template": template, "decoding": dataclasses.asdict(decoding),
                           **provenance, "disclaimer": DISCLAIMER, "answers": answers, **(differential or {})},
                          indent=2, ensure_ascii=False)
    lines = [f"# SkinGPT-4 answers for `{image}`", "", f"> {DISCLAIMER}", ""]
    if provenance:
        seed = f", seed {decoding.seed}" if decoding.do_sample else ", greedy"
        lines += [f"_Model {provenance['variant']}, projection {(provenance['projection_sha256'] or '?')[:12]}{seed}; "
                  f"skingpt4 {provenance['skingpt4_version']}, {provenance['created_utc']}._", ""]
    for i, item in enumerate(answers, 1):
        lines += [f"## {i}. {item['question']}", "", item["answer"] or "_(no answer)_", ""]
    if differential:
        lines += [format_differential(differential), ""]
    return "\n".join(lines)


def format_differential(differential: dict) -> str:
    """The three likeliest classes, whether calibrated, and the abstention message (Markdown)."""
    how = "calibrated" if differential.get("calibrated") else "not calibrated"
    lines = [f"## Differential (likelihood of each class's answer; {how})", ""]
    lines += [f"- {d['class']}: {100 * d['probability']:.1f}%" for d in (differential.get("differential") or [])[:3]]
    if differential.get("abstained"):
        lines += ["", f"**{differential['message']}**"]
    return "\n".join(lines)


COMMANDS = {
    "/help": "this list",
    "/image PATH": "a new photo (a new conversation about it)",
    "/reset": "start over with the same photo",
    "/differential": "every class's probability for the photo, and whether the model abstains",
    "/quit": "leave (also /exit or Ctrl-D)",
}
HELP = "\n".join(["Commands (a line starting with / is never sent to the model; start a question with // to "
                  "ask one that begins with /):"] + [f"  {name:<15} {what}" for name, what in COMMANDS.items()])


def interactive(engine: ChatEngine, image: Image.Image, decoding: DecodingConfig, stdin: TextIO, out: TextIO) -> None:
    print(DISCLAIMER, file=out)
    print("Type a question about the photo; /help lists the commands, /quit leaves.", file=out)
    conv = engine.new_conversation(image)
    while True:
        out.write("\nYou: ")
        out.flush()
        line = stdin.readline()
        if not line:
            out.write("\n")
            return
        line = line.strip()
        if line.startswith("/") and not line.startswith("//"):
            command, _, argument = line.partition(" ")
            command = command.lower()
            if command in ("/quit", "/exit"):
                out.write("\n")
                return
            if command == "/help":
                print(HELP, file=out)
            elif command == "/reset":
                conv = engine.new_conversation(image)
                print("(new conversation about the same photo)", file=out)
            elif command == "/image":
                path = argument.strip()
                if not path:
                    print("Usage: /image PATH", file=out)
                    continue
                try:
                    image = load_image(path)
                    conv = engine.new_conversation(image)
                    print(f"(new conversation about {path})", file=out)
                except ImageError as err:
                    print(f"Cannot use that image ({err.reason}): {err.detail}. The previous photo is kept.", file=out)
            elif command == "/differential":
                print(format_differential(differential_for(engine, conv, image)), file=out)
            else:
                print(f"Unknown command {command}; /help lists the commands (nothing was sent to the model).",
                      file=out)
            continue
        question = line[1:] if line.startswith("//") else line
        try:
            stream_reply(engine, conv, question, decoding, out)
        except ChatInputError as err:
            print(err, file=out)


def stream_reply(engine: ChatEngine, conv: Conversation, question: str, decoding: DecodingConfig,
                 out: TextIO) -> None:
    chunks = engine.ask_stream(conv, question, decoding)
    first = next(chunks)  # a refused question raises here, before anything is printed
    out.write("SkinGPT-4: ")
    shown = ""
    for text in itertools.chain([first], chunks):
        # an incomplete UTF-8 character decodes as U+FFFD until its last byte arrives: wait for it
        settled = text.rstrip("\ufffd")
        if settled.startswith(shown):
            out.write(settled[len(shown):])
            out.flush()
            shown = settled
    reply = conv.history[-1][1]
    out.write(reply[len(shown):] if reply.startswith(shown) else f"\n{reply}")
    out.write("\n")
    if conv.last_turn.newly_dropped:
        out.write(f"(note: the conversation is long; the {conv.last_turn.dropped_turns} oldest exchange(s) are no "
                  "longer in the model's view. The photo is kept. /reset starts over.)\n")


def require_projection(cfg, run: ChatRunConfig) -> None:
    """No `model.ckpt` means a projection drawn at random: every answer would be noise dressed as a diagnosis.
    Allowed only when the config says so (`run.untrained_projection: true`, e.g. to test the plumbing)."""
    if not cfg.model.get("ckpt") and not run.untrained_projection:
        raise ConfigError("model.ckpt is null: the projection would be drawn at random and every answer meaningless; "
                          "set model.ckpt to a projection checkpoint, or run.untrained_projection=true to mean it")


def main(argv: Optional[list[str]] = None, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    # What was loaded from where goes to stderr, so that stdout stays the chat (or clean JSON/Markdown).
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    try:
        cfg, run = read_chat_config(args.cfg_path, args.options, args.device)
        require_projection(cfg, run)
        decoding = decoding_from_args(args, run)
        image = load_image(args.image)  # before the model: loading a 13B LLM takes minutes
        if cfg.model.get("ckpt") and os.path.lexists(calibration_path(cfg.model.ckpt)):
            read_calibration_file(calibration_path(cfg.model.ckpt))  # a broken file: refused before loading too
        engine = build_engine(cfg, run)
        if args.clinical or args.ask:
            decoding = seeded(decoding)  # a sampled answer always records its seed: rerun with --seed to repeat it
            conv = engine.new_conversation(image)
            answers = answer_questions(engine, conv, CLINICAL_PROMPTS if args.clinical else args.ask, decoding)
            record = provenance(engine.model, args.cfg_path, args.image, engine.template.name)
            print(format_answers(answers, args.image, args.format, decoding, engine.template.name,
                                 differential_for(engine, conv, image), record), file=out)
        else:
            interactive(engine, image, decoding, stdin, out)
    except (ConfigError, ChatInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImageError as err:
        print(f"error: cannot use the image '{args.image}' ({err.reason}): {err.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
