"""The page's layout (docs/inference.md, Demo): the photo, the clinical questions, the answer and the differential
fit one screen, on a laptop (1280×800) and on a phone (390×844); the disclaimer and the model's not-medical
status are a bar fixed to the top of the window; every button is at least 44 px tall (a finger's width).

Gradio's container clips its content (`overflow: hidden`), which is why a `position: sticky` disclaimer scrolled
away with the page; the bar is `position: fixed` instead, and the page is padded by its height (kept in the CSS
variable --topbar-h by SETUP_JS, since the bar's height depends on the window's width).
"""

import html
from typing import Optional

from skingpt4.chat.notices import DISCLAIMER

PHOTO_HEIGHT = 300
CHAT_HEIGHT = 380
# On a phone the bar shows this shorter text (same content: not a doctor, may be wrong, see a doctor, emergency).
SHORT_DISCLAIMER = ("SkinGPT-4 is not a doctor: a research tool whose answers may be wrong. See a doctor about any "
                    "skin problem; in an emergency, call your local emergency number.")
NOT_MEDICAL = "⚠️ research model — not a medical device"


def disclaimer_html() -> str:
    return (f'<span class="wide">⚠️ <b>{html.escape(DISCLAIMER)}</b></span>'
            f'<span class="narrow">⚠️ <b>{html.escape(SHORT_DISCLAIMER)}</b></span>')


def model_html(line: Optional[str]) -> str:
    """The model line (chat/provenance.py), with its warning always shown and its details (checkpoint,
    projection hash) left out on a phone; a model not flagged as a toy is still not a medical device."""
    if not line:
        return "Model: loading…"
    parts = line.split(" · ")
    warnings = [p for p in parts if p.startswith("⚠")] or [NOT_MEDICAL]
    details = [p for p in parts[1:] if not p.startswith("⚠")]
    out = [f'<span class="model-name">{html.escape(parts[0])}</span>']
    out += [f'<span class="detail"> · {html.escape(p)}</span>' for p in details]
    out += [f' · <b class="not-medical">{html.escape(w)}</b>' for w in warnings]
    return "".join(out)

CSS = """
#topbar {position: fixed; top: 0; left: 0; right: 0; z-index: 1000; margin: 0; padding: 4px 12px; gap: 4px 16px;
         background: #fff4e5; border-bottom: 2px solid #e8a33d; flex-wrap: wrap; align-items: center;}
#topbar > * {min-width: 0 !important;}
#disclaimer {flex: 3 1 480px; font-size: 0.85em; line-height: 1.3; color: #5a3200;}
#disclaimer .narrow {display: none;}
.not-medical {color: #8a1c00;}
#model-info {flex: 2 1 320px; font-size: 0.8em; line-height: 1.3; color: #3b2a10;}
#topbar .html-container {padding: 0;}
.gradio-container {padding-top: calc(var(--topbar-h, 64px) + 4px) !important;}
#title h1 {font-size: 1.25em; margin: 0;}
#status {min-height: 1.5em;}
#differential {min-height: 1.5em;}
#differential p, #status p {margin: 0.2em 0;}
#chat .message, #chat .message-content {overflow-wrap: anywhere;}
button {min-height: 44px !important; min-width: 44px;}  /* touch targets, every screen */
#clinical {display: grid !important; grid-template-columns: 1fr 1fr; gap: 6px;}
#clinical > * {min-width: 0 !important; width: 100%;}
@media (max-width: 768px) {
  .gradio-container {padding-left: 6px !important; padding-right: 6px !important;}
  #title {display: none;}
  #topbar {padding: 2px 6px;}
  #topbar {gap: 0;}
  #disclaimer {font-size: 0.72em; flex-basis: 100%;}
  #disclaimer .wide, #model-info .detail {display: none;}
  #disclaimer .narrow {display: inline;}
  #model-info {font-size: 0.7em; flex-basis: 100%;}
  #ask-row {flex-wrap: nowrap !important; gap: 4px;}
  #ask-row > * {min-width: 60px !important;}
  #ask-row > #question {min-width: 0 !important; flex: 1 1 auto;}
  #main {flex-direction: column; gap: 6px;}
  #main > .column {min-width: 0 !important; width: 100%; gap: 6px;}
  #photo {height: 150px !important;}
  #photo .image-container, #photo .upload-container {height: 150px !important; min-height: 0 !important;}
  #chat {height: 170px !important; min-height: 0 !important;}  /* photo, buttons, answer, differential: one screen */
  #clinical button {font-size: 0.8em; padding: 2px 4px;}
  #differential {font-size: 0.8em;}
}
"""

# Keeps --topbar-h equal to the fixed bar's height, so the page starts below it at every window width.
SETUP_JS = """() => {
  const update = () => {
    const bar = document.querySelector('#topbar');
    if (bar) document.documentElement.style.setProperty('--topbar-h', bar.offsetHeight + 'px');
  };
  new ResizeObserver(update).observe(document.body);
  const wait = setInterval(() => {
    const bar = document.querySelector('#topbar');
    if (bar) { new ResizeObserver(update).observe(bar); update(); clearInterval(wait); }
  }, 50);
}"""

# Brings the answer area (the answer and the differential under it) into view, below the fixed bar.
SHOW_ANSWER_JS = """() => {
  const area = document.querySelector('#answer-area');
  if (!area) return [];
  const bar = document.querySelector('#topbar');
  const top = bar ? bar.getBoundingClientRect().bottom : 0;
  const box = area.getBoundingClientRect();
  let delta = box.bottom > window.innerHeight ? box.bottom - window.innerHeight + 4 : 0;
  if (box.top - delta < top) delta = box.top - top - 4;  // taller than the window: its top comes first
  if (delta) window.scrollBy({top: delta, behavior: 'instant'});
  return [];
}"""
