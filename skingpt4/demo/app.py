"""The Gradio page: photo upload (or camera), streamed chat, the four clinical questions as one-click buttons,
decoding controls (greedy, temperature, top-p, beams), Restart; the disclaimer, a photo guideline and which model
answers (variant, checkpoint, projection hash) are always on screen.

Privacy (docs/inference.md, Privacy) is decided here and in `launch.py`: every browser session has its own state (a
`gr.State`), uploads are deleted when replaced, on Restart and when the session ends, nothing about a chat or a
photo is logged, and the browser keeps no run history. The engine runs one question at a time (one model).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Optional

import gradio as gr
from gradio.exceptions import InvalidPathError
from PIL import Image

from skingpt4.chat.decoding import DecodingConfig
from skingpt4.chat.engine import ChatInputError, Conversation
from skingpt4.chat.notices import DISCLAIMER, PHOTO_GUIDELINE
from skingpt4.common.images import ImageError, load_image
from skingpt4.demo.differential_panel import DifferentialPanel
from skingpt4.demo.loading import ModelLoader
from skingpt4.demo.uploads import UploadJanitor
from skingpt4.prompting.clinical import CLINICAL_LABELS, CLINICAL_PROMPTS

log = logging.getLogger("skingpt4.demo")

START = "Upload a photo of the skin (or take one with the camera), then ask a question."
IMAGE_PROBLEMS = {
    "not_an_image": "This file is not an image. Please upload a photo (JPEG, PNG, WebP, …).",
    "empty": "This file is empty. Please upload a photo.",
    "too_large": "This image is too large. Please upload a smaller photo (a phone photo is fine).",
    "truncated": "This image file is incomplete (maybe the upload was cut off). Please upload it again.",
    "unreadable": "This image could not be read. Please try another photo or save it as JPEG or PNG.",
    "missing": "The upload did not arrive. Please upload the photo again.",
}


@dataclasses.dataclass
class ChatSession:
    """What one browser session holds (Gradio keeps one per session, never shared)."""

    image: Optional[Image.Image] = None
    photo_path: Optional[str] = None        # the upload in Gradio's cache, deleted when no longer shown
    conv: Optional[Conversation] = None     # made on the first question (the model may still be loading)
    differential: Optional[str] = None      # the photo's differential, shown once its conversation exists


class _Blocks(gr.Blocks):
    """Blocks that answer a crafted event naming a file that was never uploaded (e.g. '/etc/passwd', '../x')
    with a clear message. Gradio refuses such a path before any handler runs, but with show_error off the client
    got only `{"error": null}` and the server log a traceback."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except InvalidPathError:
            log.warning("refused a request naming a file that was not uploaded through this page")
            raise gr.Error(NOT_UPLOADED_HERE, print_exception=False) from None


NOT_UPLOADED_HERE = "That file was not uploaded through this page, so it cannot be used. Please upload the photo again."


def build_demo(loader: ModelLoader, decoding: DecodingConfig, janitor: UploadJanitor) -> gr.Blocks:
    panel = DifferentialPanel()
    with _Blocks(title="SkinGPT-4", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        state = gr.State(None)
        gr.Markdown("# SkinGPT-4 — a local dermatology assistant", elem_id="title")
        gr.Markdown(f"⚠️ **{DISCLAIMER}**", elem_id="disclaimer")
        differential = gr.Markdown("", elem_id="differential")  # top 3 + abstention, under the disclaimer
        # On a narrow screen (a phone) the chat column comes first (CSS `order`, see launch.py) and the status
        # line, where every error appears, sits right under the question box.
        with gr.Row(elem_id="main"):
            with gr.Column(scale=1, elem_id="side"):
                photo = gr.Image(type="filepath", sources=["upload", "webcam"], label="Skin photo",
                                 elem_id="photo", height=300)
                gr.Markdown(PHOTO_GUIDELINE, elem_id="guideline")
                with gr.Accordion("Answer settings", open=True):
                    greedy = gr.Checkbox(value=not decoding.do_sample, label="Greedy (same answer every time)")
                    temperature = gr.Slider(0.1, 2.0, value=decoding.temperature, step=0.05, label="Temperature",
                                            info="Sampling only; higher is more varied.", elem_id="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=decoding.top_p, step=0.05, label="Top-p",
                                      info="Sampling only; lower keeps to the likeliest words.", elem_id="top-p")
                    beams = gr.Slider(1, 5, value=decoding.num_beams, step=1, label="Beams",
                                      info="More than 1: beam search (deterministic, not streamed).")
                restart = gr.Button("Restart", elem_id="restart")
            with gr.Column(scale=2, elem_id="chat-column"):
                gr.Markdown("**Conversation**", elem_id="chat-title")  # above the box: a label inside it
                chatbot = gr.Chatbot(label="Conversation", show_label=False, elem_id="chat", height=460,
                                     feedback_options=None, buttons=["copy"])  # covered the top message
                with gr.Row():
                    question = gr.Textbox(placeholder="Ask about the photo…", show_label=False, scale=5,
                                          elem_id="question", lines=1)
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                status = gr.Markdown(loader.status(), elem_id="status")
                gr.Markdown("**Clinical questions** (one click asks):")
                with gr.Row():
                    clinical = [gr.Button(label, size="sm", elem_id=f"clinical-{i}")
                                for i, label in enumerate(CLINICAL_LABELS)]
                model_info = gr.Markdown(loader.model_line or "Model: loading…", elem_id="model-info")
        timer = gr.Timer(1.0, active=not loader.done)

        def show_loading():
            return loader.status(), loader.model_line or "Model: loading…", gr.Timer(active=not loader.done)

        loading_outputs = [status, model_info, timer]
        timer.tick(show_loading, outputs=loading_outputs, show_progress="hidden", api_visibility="private")
        demo.load(show_loading, outputs=loading_outputs, show_progress="hidden", api_visibility="private")

        def new_photo(payload: Optional[dict], session: Optional[ChatSession], request: gr.Request):
            session = session or ChatSession()
            janitor.delete(request.session_hash, session.photo_path)
            session.image = session.photo_path = session.conv = session.differential = None
            if payload is None:  # the user cleared the photo
                return session, [], START, gr.update(), ""
            path = payload.get("path")
            if path:
                janitor.track(request.session_hash, path)
            try:
                session.image = load_image(path, name="the upload") if path else None
            except ImageError as err:
                janitor.delete(request.session_hash, path)
                return session, [], f"⚠️ {IMAGE_PROBLEMS[err.reason]}", None, ""
            if session.image is None:
                return session, [], f"⚠️ {IMAGE_PROBLEMS['missing']}", None, ""
            session.photo_path = path
            return (session, [], "Photo received. Ask a question, or click one of the clinical questions.",
                    gr.update(), "")

        def ask(text: str, greedy_on: bool, temp: float, nucleus: float, n_beams: float,
                session: Optional[ChatSession], history: list):
            session = session or ChatSession()
            history = list(history or [])
            engine = loader.engine
            if engine is None:
                yield session, history, loader.status(), text
                return
            if session.image is None:
                yield session, history, "⚠️ Please upload a photo of the skin first.", text
                return
            n_beams = int(n_beams)
            try:
                settings = dataclasses.replace(decoding, do_sample=not greedy_on and n_beams == 1,
                                               temperature=float(temp), top_p=float(nucleus), num_beams=n_beams)
            except ValueError as err:  # a crafted request outside the sliders' ranges
                yield session, history, f"⚠️ {err}", text
                return
            try:
                if session.conv is None:
                    session.conv = engine.new_conversation(session.image)
                history += [{"role": "user", "content": text.strip()}, {"role": "assistant", "content": "…"}]
                with contextlib.closing(engine.ask_stream(session.conv, text, settings)) as stream:
                    for reply in stream:  # closed (generation stopped) if Gradio cancels this event
                        history[-1] = {"role": "assistant", "content": reply}
                        yield session, history, "SkinGPT-4 is answering…", ""
            except ChatInputError as err:  # refused before anything was generated: take the question back out
                yield session, history[:-2], f"⚠️ {err}", text
                return
            except Exception as err:  # keep serving; log the kind of failure, never the chat
                log.exception("answering failed")
                yield session, history, (f"⚠️ Something went wrong while answering ({type(err).__name__}). "
                                         "Please try again or press Restart."), text
                return
            note = "Done. Ask another question, or press Restart for a new photo."
            if session.conv.last_turn.newly_dropped:
                note = (f"Note: the conversation is long, so the {session.conv.last_turn.dropped_turns} oldest "
                        "exchange(s) are no longer in the model's view (the photo is). Press Restart to start over.")
            yield session, history, note, ""

        def show_differential(session: Optional[ChatSession]):
            """After an answer: the photo's differential, computed once per conversation."""
            engine = loader.engine
            if session is None or session.conv is None or engine is None:
                return gr.update()
            if session.differential is None:
                try:
                    session.differential = panel.markdown(engine, session.conv)
                except Exception as err:  # the chat goes on without it; log the kind of failure, never the photo
                    log.exception("the differential failed")
                    return f"Differential unavailable ({type(err).__name__})."
            return session.differential

        ask_inputs = [greedy, temperature, top_p, beams, state, chatbot]
        ask_outputs = [state, chatbot, status, question]
        common = dict(concurrency_id="model", concurrency_limit=1, api_visibility="private")
        events = [send.click(ask, inputs=[question] + ask_inputs, outputs=ask_outputs, **common),
                  question.submit(ask, inputs=[question] + ask_inputs, outputs=ask_outputs, **common)]
        events += [button.click(functools.partial(ask, prompt), inputs=ask_inputs, outputs=ask_outputs, **common)
                   for button, prompt in zip(clinical, CLINICAL_PROMPTS)]
        answering = events + [event.then(show_differential, inputs=[state], outputs=[differential], **common)
                              for event in events]
        # a new photo, Restart or clearing the chat stop an answer being written (it would bring the old chat back)
        # preprocess=False: the handler checks the file itself, so a non-image gets a friendly message
        photo.input(new_photo, inputs=[photo, state], outputs=[state, chatbot, status, photo, differential],
                    preprocess=False,
                    cancels=answering, api_visibility="private")

        def start_over(session: Optional[ChatSession], request: gr.Request):
            if session is not None:
                janitor.delete(request.session_hash, session.photo_path)
            return ChatSession(), None, [], START, "", ""

        def chat_cleared(session: Optional[ChatSession]):  # the chat's own trash button: same photo, new chat
            session = session or ChatSession()
            session.conv = None
            return session, "Conversation cleared; the photo is kept. Ask a new question."  # same photo: same differential

        chatbot.clear(chat_cleared, inputs=[state], outputs=[state, status], cancels=answering,
                      api_visibility="private")
        restart.click(start_over, inputs=[state], outputs=[state, photo, chatbot, status, question, differential],
                      cancels=answering, api_visibility="private")

        def session_closed(request: gr.Request):
            janitor.end_session(request.session_hash)

        demo.unload(session_closed)
    return demo
