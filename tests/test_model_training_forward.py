"""Embedding layout and label masking (docs/prompts.md), the original's training text byte for byte; training only the projector lowers the loss and leaves every
frozen parameter unchanged."""
import torch

from skingpt4.models import build_model
from skingpt4.prompting import IGNORE_INDEX

LINE = "<Img><ImageHere></Img> What's wrong with my skin?"   # a step-2 prompt line; vicuna_v0 wraps it


def test_layout_and_labels(tiny_model):
    m, tok = tiny_model, tiny_model.tokenizer
    answers = ["Psoriasis and lichen planus.", "This lesion shows erythema, plaque and scale, and more text."]
    image_embeds = m.encode_image(torch.zeros(2, 3, 224, 224))
    batch = m.build_inputs(image_embeds, [m.layout((), LINE, answer=a, style="train") for a in answers])
    before = tok("###Human: <Img>", add_special_tokens=False).input_ids
    after = tok("</Img> What's wrong with my skin? ###Assistant: ", add_special_tokens=False).input_ids
    for i, answer in enumerate(answers):
        answer_ids = tok(answer + "###", add_special_tokens=False).input_ids
        n_ctx = 1 + len(before) + 32 + len(after)
        length = n_ctx + len(answer_ids)
        labels = batch["labels"][i].tolist()
        # -100 exactly on BOS, prompt, image and padding; the answer tokens elsewhere
        assert labels[:n_ctx] == [IGNORE_INDEX] * n_ctx
        assert labels[n_ctx:length] == answer_ids
        assert labels[length:] == [IGNORE_INDEX] * (len(labels) - length)
        assert batch["attention_mask"][i].tolist() == [1] * length + [0] * (len(labels) - length)
        mask = batch["image_mask"][i]
        assert mask.sum() == 32 and mask[1 + len(before): 1 + len(before) + 32].all()
        # the embeddings are BOS + before-text, then the image embeddings, then after-text
        embeds = batch["inputs_embeds"][i]
        text_ids = torch.tensor([tok.bos_token_id] + before)
        assert torch.equal(embeds[: len(text_ids)], m.embed_tokens(text_ids))
        assert torch.equal(embeds[mask], image_embeds[i])
        start_after = 1 + len(before) + 32
        assert torch.equal(embeds[start_after: start_after + len(after)], m.embed_tokens(torch.tensor(after)))


def test_answer_truncated_at_max_txt_len(tiny_assets):
    m = build_model({"variant": "tiny", "max_txt_len": 5})
    batch = m.build_inputs(m.encode_image(torch.zeros(1, 3, 224, 224)),
                           [m.layout((), LINE, answer="word " * 50, style="train")])
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == 5


def test_projector_training_lowers_loss_and_only_projector_changes(tiny_assets):
    torch.manual_seed(0)
    model = build_model({"variant": "tiny"})
    model.train()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["llama_proj.weight", "llama_proj.bias"]
    assert not model.llm.training and not model.visual_encoder.training and not model.qformer.training
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("llama_proj")}
    proj_before = model.llama_proj.weight.detach().clone()
    samples = {"image": torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)),
               "text_input": ["This lesion shows erythema and scale.", "This lesion shows papule and crust."]}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(10):
        loss = model(samples)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.15, losses  # a random tiny LLM: only the image embeddings can move
    assert not torch.equal(model.llama_proj.weight, proj_before)
    for key, value in model.state_dict().items():
        if not key.startswith("llama_proj"):
            assert torch.equal(value, frozen_before[key]), key


def test_cached_queries_give_the_same_loss(tiny_model):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    samples = {"text_input": ["Acne.", "Herpes."], "prompt": ["<Img><ImageHere></Img> What's wrong with my skin?"] * 2}
    with torch.no_grad():
        direct = tiny_model({**samples, "image": images})["loss"]
        cached = tiny_model({**samples, "queries": tiny_model.encode_queries(images)})["loss"]
    assert torch.equal(direct, cached)
