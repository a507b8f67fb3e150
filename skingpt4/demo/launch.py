"""`python demo.py --cfg-path eval_configs/X.yaml [--device cpu|cuda:N] [--port N] [--share] [--auth user:pass]`

Private by default (docs/inference.md, Privacy): the server listens on 127.0.0.1 only, makes no public link unless --share,
sends no analytics, keeps no run history in the browser, keeps each session's photo in a private folder deleted when
the session ends, and removes every uploaded file when the server stops (uploads.py).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from typing import Optional

import gradio as gr

from skingpt4.chat.build import build_engine, read_chat_config
from skingpt4.common.config import ConfigError
from skingpt4.demo.app import build_demo
from skingpt4.demo.loading import ModelLoader
from skingpt4.demo.page_layout import CSS, SETUP_JS
from skingpt4.demo.uploads import UploadStore

log = logging.getLogger("skingpt4.demo")

# System fonts only: the default theme fetches Google Fonts, i.e. every page view would reach the internet.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python demo.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="eval config YAML (see eval_configs/)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (overrides model.device)")
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also make a public gradio.live link (photos then travel through Gradio's servers)")
    parser.add_argument("--auth", metavar="USER:PASS", help="ask for this user name and password")
    parser.add_argument("--max-file-size", default="25mb", help="largest upload accepted (default 25mb)")
    parser.add_argument("--server", help="answer with the LLM served there (vLLM; docs/scaling.md), e.g. "
                        "http://127.0.0.1:8000/v1; needs --export-dir")
    parser.add_argument("--export-dir", help="with --server: the --target vllm export it serves")
    parser.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. run.decoding.max_new_tokens=200")
    return parser.parse_args(argv)


def parse_auth(value: Optional[str]) -> Optional[tuple[str, str]]:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth takes USER:PASS, both non-empty")
    return user, password


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:  # config mistakes are reported before anything starts
        cfg, run = read_chat_config(args.cfg_path, args.options, args.device)
        auth = parse_auth(args.auth)
        if bool(args.server) != bool(args.export_dir):
            raise ConfigError("--server and --export-dir go together: the server's address and the export it serves")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.share:
        log.warning("--share: a PUBLIC link will be created. Anyone who has it can use this demo, and photos and "
                    "chats will pass through Gradio's share servers. Do not use it with patient data.%s",
                    "" if auth else " Consider --auth user:pass.")
    if args.server:  # the engine builder hook: the served LLM (skingpt4/chat/remote_engine.py)
        from skingpt4.chat.remote_engine import build_remote_engine

        build = lambda: build_remote_engine(args.server, args.export_dir, run, args.device)  # noqa: E731
    else:
        build = lambda: build_engine(cfg, run)  # noqa: E731
    loader = ModelLoader(build).start()
    gradio_temp_dir = os.environ.get("GRADIO_TEMP_DIR")
    uploads = open_upload_store()
    # SIGTERM stops the server like Ctrl-C, so the folder is removed then too (restored afterwards: tests call main)
    on_sigterm = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        demo = build_demo(loader, run.decoding, uploads)
        demo.queue(default_concurrency_limit=1)
        demo.launch(server_name="127.0.0.1", server_port=args.port, share=args.share, auth=auth,
                    max_file_size=args.max_file_size, theme=THEME, css=CSS, js=SETUP_JS, footer_links=[],
                    run_history=False, enable_monitoring=False, ssr_mode=False, mcp_server=False, pwa=False,
                    show_error=False, quiet=False, blocked_paths=[str(uploads.sessions_dir)])
    finally:  # Ctrl-C, SIGTERM or a failed start: nothing uploaded stays on disk
        signal.signal(signal.SIGTERM, on_sigterm)
        uploads.shutdown()
        log.info("removed the demo's upload folder")
        if gradio_temp_dir is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = gradio_temp_dir
    return 0


def open_upload_store() -> UploadStore:
    """The app's own folder (inside $GRADIO_TEMP_DIR if set, else the system temp folder), made Gradio's upload
    cache for this process only, so sweeping it never touches another Gradio app's files."""
    parent = os.environ.get("GRADIO_TEMP_DIR")
    if parent:
        os.makedirs(parent, exist_ok=True)
    uploads = UploadStore(tempfile.mkdtemp(prefix="skingpt4-demo-", dir=parent or None)).start_sweeper()
    os.environ["GRADIO_TEMP_DIR"] = str(uploads.cache_dir)
    return uploads


def _stop_like_ctrl_c(signum, frame):
    raise KeyboardInterrupt
