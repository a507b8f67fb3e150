"""The Gradio page: photo upload (or camera), streamed chat, the four clinical questions as one-click buttons,
Stop, decoding controls (greedy, temperature, top-p, beams), Restart; the disclaimer and which model answers
(variant, checkpoint, projection hash, whether it is a medical model) stay on screen (layout: `page_layout.py`).

Privacy (docs/inference.md, Privacy) is decided here, in `uploads.py` and in `launch.py`: each browser session's
photo, chat and differential live on the server under its session id (`sessions.py`), the photo as the session's
own private copy, deleted when replaced, on Restart and when the session ends; every payload is screened before
Gradio handles it (`screening.py`); nothing about a chat or a photo is logged. One model answers one question at
a time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Optional

import gradio as gr
from gradio.exceptions import InvalidPathError

from skingpt4.chat.decoding import DecodingConfig
from skingpt4.chat.engine import ChatInputError
from skingpt4.chat.notices import PHOTO_GUIDELINE
from skingpt4.common.images import ImageError, load_image
from skingpt4.demo import page_layout
from skingpt4.demo.differential_panel import DifferentialPanel
from skingpt4.demo.loading import ModelLoader
from skingpt4.demo.screening import NOT_UPLOADED_HERE, QuietLog, Refused, screen_inputs
from skingpt4.demo.sessions import MAX_EXCHANGES, SessionRegistry
from skingpt4.demo.uploads import UploadRefused, UploadStore
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
    "not_uploaded_here": NOT_UPLOADED_HERE,
}
TOO_LONG = f"This conversation has reached {MAX_EXCHANGES} questions. Press Restart to start a new one."


class _Blocks(gr.Blocks):
    """Blocks whose events accept only payloads the page itself sends (`screening.py`): checked before Gradio
    resolves any file in them, answered with one clear message, logged in one short line at most a minute."""

    def __init__(self, *args, uploads: UploadStore, **kwargs):
        super().__init__(*args, **kwargs)
        # Gradio adds each uploaded file to this set; the store counts the uploads so each is claimed once.
        self.upload_file_set = uploads.ledger()
        self.temp_file_sets = [self.upload_file_set]
        self.refusals = QuietLog()

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        try:
            inputs = screen_inputs(block_fn, inputs)
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except Refused as err:
            self.refusals.warning(err.kind, f"refused a request: {err.kind}")
            raise gr.Error(err.message, print_exception=False) from None
        except InvalidPathError:
            self.refusals.warning("not uploaded", "refused a request naming a file that was not uploaded "
                                                  "through this page")
            raise gr.Error(NOT_UPLOADED_HERE, print_exception=False) from None


def build_demo(loader: ModelLoader, decoding: DecodingConfig, uploads: UploadStore,
               sessions: Optional[SessionRegistry] = None) -> gr.Blocks:
    panel = DifferentialPanel()
    sessions = sessions or SessionRegistry()

    def end_session(session_hash: str) -> None:
        sessions.end(session_hash)
        uploads.end_session(session_hash)
    with _Blocks(title="SkinGPT-4", analytics_enabled=False, delete_cache=(600, 3600), uploads=uploads) as demo:
        demo.sessions = sessions  # for tests and the shutdown clean-up
        with gr.Row(elem_id="topbar"):  # fixed to the top of the window (page_layout.py)
            gr.HTML(page_layout.disclaimer_html(), elem_id="disclaimer")
            model_info = gr.HTML(page_layout.model_html(loader.model_line), elem_id="model-info")
        gr.Markdown("# SkinGPT-4 — a local dermatology assistant", elem_id="title")
        with gr.Row(elem_id="main"):
            with gr.Column(scale=2, elem_id="side"):
                photo = gr.Image(type="filepath", sources=["upload", "webcam"], label="Skin photo",
                                 elem_id="photo", height=page_layout.PHOTO_HEIGHT)
                with gr.Row(elem_id="clinical"):
                    clinical = [gr.Button(label, size="md", elem_id=f"clinical-{i}", elem_classes="clinical")
                                for i, label in enumerate(CLINICAL_LABELS)]
            with gr.Column(scale=3, elem_id="answer-area"):
                chatbot = gr.Chatbot(label="Conversation", show_label=False, elem_id="chat",
                                     height=page_layout.CHAT_HEIGHT, feedback_options=None, buttons=["copy"],
                                     placeholder="The answer appears here.")
                differential = gr.Markdown("", elem_id="differential")  # top 3 + abstention, under the answer
                status = gr.Markdown(loader.status(), elem_id="status")
                with gr.Row(elem_id="ask-row"):
                    question = gr.Textbox(placeholder="Ask about the photo…", show_label=False, scale=5,
                                          elem_id="question", lines=1, max_length=4000)
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send", min_width=64)
                    stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop", min_width=64)
        with gr.Row(elem_id="more"):
            with gr.Column():
                gr.Markdown(PHOTO_GUIDELINE, elem_id="guideline")
                restart = gr.Button("Restart (new photo, new chat)", elem_id="restart")
            with gr.Column():
                with gr.Accordion("Answer settings", open=False, elem_id="settings"):
                    greedy = gr.Checkbox(value=not decoding.do_sample, label="Greedy (same answer every time)")
                    temperature = gr.Slider(0.1, 2.0, value=decoding.temperature, step=0.05, label="Temperature",
                                            info="Sampling only; higher is more varied.", elem_id="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=decoding.top_p, step=0.05, label="Top-p",
                                      info="Sampling only; lower keeps to the likeliest words.", elem_id="top-p")
                    beams = gr.Slider(1, 5, value=decoding.num_beams, step=1, label="Beams",
                                      info="More than 1: beam search (deterministic, not streamed).")
        timer = gr.Timer(1.0, active=not loader.done)

        def show_loading():
            return loader.status(), page_layout.model_html(loader.model_line), gr.Timer(active=not loader.done)

        loading_outputs = [status, model_info, timer]
        timer.tick(show_loading, outputs=loading_outputs, show_progress="hidden", api_visibility="private")
        demo.load(show_loading, outputs=loading_outputs, show_progress="hidden", api_visibility="private")

        def new_photo(payload: Optional[dict], request: gr.Request):
            session = sessions.get(request.session_hash)
            uploads.release(request.session_hash, session.photo_copy)
            session.forget_photo()
            if payload is None:  # the user cleared the photo
                return [], START, gr.update(), ""
            try:
                copy = uploads.claim(request.session_hash, payload["path"])
            except UploadRefused as err:
                return [], f"⚠️ {IMAGE_PROBLEMS[err.reason]}", None, ""
            try:
                session.image = load_image(copy, name="the upload")
            except ImageError as err:  # the reason only: no file name, no traceback
                uploads.release(request.session_hash, copy)
                return [], f"⚠️ {IMAGE_PROBLEMS[err.reason]}", None, ""
            session.photo_copy = copy
            return [], "Photo received. Ask a question, or click one of the clinical questions.", gr.update(), ""

        def ask(text: str, greedy_on: bool, temp: float, nucleus: float, n_beams: float, request: gr.Request):
            session = sessions.get(request.session_hash)
            history = session.shown_history()
            engine = loader.engine
            if engine is None:
                yield history, loader.status(), text
                return
            if session.image is None:
                yield history, "⚠️ Please upload a photo of the skin first.", text
                return
            if session.exchanges >= MAX_EXCHANGES:
                yield history, f"⚠️ {TOO_LONG}", text
                return
            n_beams = int(n_beams)
            try:
                settings = dataclasses.replace(decoding, do_sample=not greedy_on and n_beams == 1,
                                               temperature=float(temp), top_p=float(nucleus), num_beams=n_beams)
            except ValueError as err:  # a crafted request outside the sliders' ranges
                yield history, f"⚠️ {err}", text
                return
            image = session.image
            try:
                if session.conv is None:
                    session.conv = engine.new_conversation(image)
                conv = session.conv
                reply = {"role": "assistant", "content": "…"}
                turn, shown = [{"role": "user", "content": text.strip()}, reply], False
                with contextlib.closing(engine.ask_stream(conv, text, settings)) as stream:
                    for partial in stream:  # closed (generation stopped) if Gradio cancels this event
                        if not shown and session.image is image:
                            session.history += turn  # shown once the engine took the question
                            session.exchanges, shown = session.exchanges + 1, True
                        reply["content"] = partial
                        yield session.shown_history(), "SkinGPT-4 is answering…", ""
            except ChatInputError as err:  # refused before anything was generated
                yield session.shown_history(), f"⚠️ {err}", text
                return
            except Exception as err:  # keep serving; log the kind of failure, never the chat
                log.error("answering failed (%s)", type(err).__name__)
                yield session.shown_history(), (f"⚠️ Something went wrong while answering ({type(err).__name__}). "
                                                "Please try again or press Restart."), text
                return
            note = "Done. Ask another question, or press Restart for a new photo."
            if conv.last_turn.newly_dropped:
                note = (f"Note: the conversation is long, so the {conv.last_turn.dropped_turns} oldest "
                        "exchange(s) are no longer in the model's view (the photo is). Press Restart to start over.")
            yield session.shown_history(), note, ""

        def asking(prompt: str):
            def ask_clinical(greedy_on: bool, temp: float, nucleus: float, n_beams: float, request: gr.Request):
                yield from ask(prompt, greedy_on, temp, nucleus, n_beams, request)
            return ask_clinical

        def show_differential(request: gr.Request):
            """After an answer: the photo's differential, computed once per conversation."""
            session, engine = sessions.get(request.session_hash), loader.engine
            if session.conv is None or engine is None:
                return gr.update()
            if session.differential is None:
                try:
                    session.differential = panel.markdown(engine, session.conv, session.image)
                except Exception as err:  # the chat goes on without it; log the kind of failure, never the photo
                    log.error("the differential failed (%s)", type(err).__name__)
                    return f"Differential unavailable ({type(err).__name__})."
            return session.differential

        ask_inputs = [greedy, temperature, top_p, beams]
        ask_outputs = [chatbot, status, question]
        common = dict(concurrency_id="model", concurrency_limit=1, api_visibility="private")
        triggers = [(send.click, [question], ask), (question.submit, [question], ask)]
        triggers += [(button.click, [], asking(prompt)) for button, prompt in zip(clinical, CLINICAL_PROMPTS)]
        answering = []
        for trigger, extra, handler in triggers:
            # the browser brings the answer area into view at once, then again when the differential arrives
            trigger(None, js=page_layout.SHOW_ANSWER_JS, api_visibility="private")
            event = trigger(handler, inputs=extra + ask_inputs, outputs=ask_outputs, **common)
            after = event.then(show_differential, outputs=[differential], **common)
            after.then(None, js=page_layout.SHOW_ANSWER_JS, api_visibility="private")
            answering += [event, after]

        def stopped(request: gr.Request):
            session = sessions.get(request.session_hash)
            return session.shown_history(), "Stopped. Ask another question, or press Restart for a new photo."

        # the status is set once the answer is cancelled: a piece of it still on the way would overwrite it
        stop.click(None, cancels=answering, api_visibility="private").then(
            stopped, outputs=[chatbot, status], api_visibility="private")
        # a new photo, Restart or clearing the chat stop an answer being written (it would bring the old chat back)
        # preprocess=False: the handler checks the file itself, so a non-image gets a friendly message
        photo.input(new_photo, inputs=[photo], outputs=[chatbot, status, photo, differential], preprocess=False,
                    cancels=answering, api_visibility="private")

        def start_over(request: gr.Request):
            session = sessions.get(request.session_hash)
            uploads.release(request.session_hash, session.photo_copy)
            session.forget_photo()
            return None, [], START, "", ""

        def chat_cleared(request: gr.Request):  # the chat's own trash button: same photo, new chat
            session = sessions.get(request.session_hash)
            session.conv, session.history, session.exchanges = None, [], 0
            return "Conversation cleared; the photo is kept. Ask a new question."  # same photo: same differential

        chatbot.clear(chat_cleared, outputs=[status], cancels=answering, api_visibility="private")
        restart.click(start_over, outputs=[photo, chatbot, status, question, differential],
                      cancels=answering, api_visibility="private")

        def session_closed(request: gr.Request):
            end_session(request.session_hash)

        demo.unload(session_closed)
        uploads.on_sweep.append(lambda: [end_session(key) for key in sessions.idle()])
    return demo
