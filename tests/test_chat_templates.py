"""Chat templates: the exact prompt text of docs/prompts.md, multi-turn rendering, stop strings and reply clean-up."""
import pytest

from skingpt4.common.registry import chat_templates
from skingpt4.prompting.templates import split_at_image

VICUNA_SYSTEM_TEXT = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I "
                 "provide it to you. Please answer my questions.")
Q1 = "Could you describe the skin disease in this image for me?"


def test_registered_names():
    assert {"vicuna_v0", "llama2_chat", "instruction_response"} <= set(chat_templates.names())
    with pytest.raises(KeyError, match="unknown chat template 'vicuna'.*valid choices"):
        chat_templates.get("vicuna")


def test_vicuna_first_turn_matches_design():
    template = chat_templates.get("vicuna_v0")
    assert template.render([], Q1) == (
        VICUNA_SYSTEM_TEXT + "###Human: <Img><ImageHere></Img> " + Q1 + "###Assistant:")
    assert template.stop_strings == ("###",)


def test_vicuna_multi_turn_matches_original_demo():
    # MiniGPT-4 / SkinGPT-4 Conversation.get_prompt: system + "###" + "Human: msg###Assistant: reply###" ...
    template = chat_templates.get("vicuna_v0")
    text = template.render([(Q1, "It looks like eczema."), ("Why?", "Because of the scale.")], "Treatment?")
    assert text == (VICUNA_SYSTEM_TEXT + "###Human: <Img><ImageHere></Img> " + Q1 + "###Assistant: It looks like eczema."
                    "###Human: Why?###Assistant: Because of the scale.###Human: Treatment?###Assistant:")


def test_split_at_image():
    template = chat_templates.get("vicuna_v0")
    before, after = split_at_image(template.render([], "Q?"))
    assert before == VICUNA_SYSTEM_TEXT + "###Human: <Img>"
    assert after == "</Img> Q?###Assistant:"
    with pytest.raises(ValueError, match="exactly once, found 2"):
        split_at_image("<ImageHere> <ImageHere>")


def test_image_goes_with_the_first_kept_question():
    template = chat_templates.get("vicuna_v0")
    assert template.render([("old", "reply")], "new").count("<Img><ImageHere></Img> old###") == 1
    # after the oldest turn is left out (context full) the image moves to the next question
    assert template.render([], "new").endswith("###Human: <Img><ImageHere></Img> new###Assistant:")


def test_llama2_and_instruction_templates():
    llama2 = chat_templates.get("llama2_chat")
    assert llama2.render([], "Q?") == "[INST] <Img><ImageHere></Img> Q? [/INST]"
    assert llama2.render([("Q?", "A.")], "R?") == "[INST] <Img><ImageHere></Img> Q? [/INST] A. </s><s>[INST] R? [/INST]"
    assert llama2.stop_strings == ()  # ends with the EOS token
    paper = chat_templates.get("instruction_response")
    assert paper.render([], "Q?") == "### Instruction: <Img><ImageHere></Img> Q? ### Response:"
    assert paper.render([("Q?", "A.")], "R?") == (
        "### Instruction: <Img><ImageHere></Img> Q? ### Response: A. ### Instruction: R? ### Response:")


@pytest.mark.parametrize("raw, clean", [
    (" It is acne.###Human: thanks", "It is acne."),
    ("It is acne.", "It is acne."),
    ("  ### ", ""),
    (" a ## b###", "a ## b"),
])
def test_vicuna_reply_clean_up(raw, clean):
    assert chat_templates.get("vicuna_v0").clean_reply(raw) == clean
