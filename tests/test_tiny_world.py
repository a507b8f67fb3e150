"""The tiny world learns: its corpus is laid out exactly as the model reads text, its asset build is cached and
measured, and a smaller version of the main job (a projection trained on a few synthetic images) diagnoses
held-out images far above chance and above the untrained projection, and falls to chance without the image."""
import json
import random

import pytest

from skingpt4.tiny.corpus import Corpus
from skingpt4.prompting.clinical import CLINICAL_PROMPTS

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_corpus_layouts_are_the_models(tiny_model):
    """A training dialogue has the tokens SkinGPT4.forward builds, a chat dialogue those of the chat engine's prompt
    and reply (both `model.layout`); every position after the image is trained."""
    from skingpt4.prompting import IMAGE_SLOT

    corpus, rng = Corpus(), random.Random(0)
    question, answer = corpus.step2_prompts[0], corpus.class_sentence("Herpes", rng)
    dialogue = corpus.training("step2", question, answer, ("class:Herpes",))
    tokens, start = corpus.tokens(dialogue, tiny_model.tokenizer, 32)
    assert tokens == tiny_model.layout((), f"<Img><ImageHere></Img> {question}", answer=answer, style="train").tokens
    assert tokens[start - 32:start] == [IMAGE_SLOT] * 32 and IMAGE_SLOT not in tokens[start:]

    turns = list(zip(CLINICAL_PROMPTS, corpus.clinical_answers("Herpes", "dots", rng)))
    dialogue = corpus.chat("clinical", turns, ("class:Herpes",))
    tokens, start = corpus.tokens(dialogue, tiny_model.tokenizer, 32)
    assert tokens == tiny_model.layout(turns[:-1], turns[-1][0], answer=turns[-1][1], style="chat").tokens
    trained = tiny_model.tokenizer.decode(tokens[start:])
    assert all(reply in trained for _, reply in turns)  # all four replies carry a loss


def test_blind_dialogues_train_only_what_follows_the_first_reply(tiny_model):
    corpus = Corpus()
    turns = list(zip(CLINICAL_PROMPTS, corpus.clinical_answers("Dermatitis", "rings", random.Random(1))))
    dialogue = corpus.chat("clinical", turns, ("class:Dermatitis",), blind=True)
    tokens, start = corpus.tokens(dialogue, tiny_model.tokenizer, 32)
    trained = tiny_model.tokenizer.decode(tokens[start:])
    # tokens wholly inside the first reply carry no loss (its final "." may share a piece with "###")
    assert trained.lstrip(".").startswith("###Human: ") and turns[0][1] not in trained and turns[1][1] in trained


def test_asset_build_is_cached_and_measured(tiny_assets):
    from skingpt4.tiny.assets import TinyRecipe, build_tiny_assets, is_built

    build = json.loads((tiny_assets / "build.json").read_text())
    assert is_built(tiny_assets, TinyRecipe.small()) and not is_built(tiny_assets, TinyRecipe())
    before = (tiny_assets / "build.json").stat().st_mtime_ns
    assert build_tiny_assets(tiny_assets, recipe=TinyRecipe.small()) == tiny_assets
    assert (tiny_assets / "build.json").stat().st_mtime_ns == before  # found, not rebuilt
    # the frozen encoders see the world (chance 1/16, 1/48) and the LLM reads a clean image code, also when it
    # holds only the class's concepts (the class is a combination of concepts)
    probe = build["probe_held_out"]
    assert probe["classes"] >= 4 / 16 and probe["concepts"] >= 0.25, probe
    assert build["llm_loss"]["last"] < 0.5 and build["llm_reads_clean_slot_accuracy"] >= 0.9
    assert build["llm_names_class_from_concepts_accuracy"] >= 0.75


@pytest.fixture(scope="module")
def small_world(tiny_assets, tmp_path_factory):
    """A smaller main job: 8 train / 3 test images per class, step 2 trained from scratch (120 steps)."""
    import train as train_script
    from data_prep.make_synthetic import make_synthetic
    from skingpt4.common.config import load_config

    root = tmp_path_factory.mktemp("small_world")
    make_synthetic(root / "data", per_class=8, test_per_class=3, skincon_images=12, ddi_images=2, notes_per_class=1,
                   skincon_test_images=1, stats=False, log=lambda m: None)
    data, out = root / "data", root / "step2"
    eval_image = "vis_processor.name=blip2_image_eval"
    options = ["model.ckpt=null", f"datasets.dermnet.storage={data / 'prepared' / 'dermnet'}",
               f"datasets.dermnet.{eval_image}", f"datasets.skin_notes.storage={data / 'prepared' / 'notes'}",
               f"datasets.skin_notes.{eval_image}", "run.cache_frozen_features=true", "run.batch_size_train=16",
               "run.init_lr=1e-2", "run.min_lr=1e-3", "run.warmup_steps=10", "run.max_epoch=1",
               "run.iters_per_epoch=120", "run.log_freq=20", "run.progress_bar=false", "run.tensorboard=false",
               f"run.output_dir={out}"]
    result, _ = train_script.run_training(load_config(REPO / "train_configs" / "tiny_step2.yaml", options))
    return data, result.checkpoint


def test_a_trained_projection_diagnoses_held_out_images_and_needs_them(small_world, tiny_assets, tmp_path):
    from skingpt4.evaluation import tasks
    from skingpt4.evaluation.image_control import image_control
    from skingpt4.tiny.learning import _context
    from skingpt4.models.loading import load_projection

    data, checkpoint = small_world
    cases = data / "cases" / "dermnet_test.csv"
    eval_cfg = REPO / "eval_configs" / "main_job.yaml"
    ctx = _context(eval_cfg, tmp_path / "untrained", cases, tiny_assets)
    untrained = tasks.metrics(ctx)["diagnosis"]
    load_projection(ctx.engine.model, str(checkpoint))
    trained_ctx = _context(eval_cfg, tmp_path / "trained", cases, tiny_assets, chat=ctx.engine)
    trained = tasks.metrics(trained_ctx)["diagnosis"]
    chance = 1 / 16
    assert trained["n"] == 48 and trained["accuracy"] >= 5 * chance and trained["macro_f1"] >= 0.3
    assert trained["accuracy"] >= untrained["accuracy"] + 0.25

    control_ctx = _context(eval_cfg, tmp_path / "control", cases, tiny_assets, chat=ctx.engine)
    conditions = image_control(control_ctx)["conditions"]
    assert conditions["original"]["accuracy"] == trained["accuracy"]
    assert conditions["blank"]["accuracy"] <= 2 * chance and conditions["noise"]["accuracy"] <= 2 * chance
    assert conditions["shuffled"]["accuracy"] <= 2 * chance and conditions["shuffled"]["follows_donor"] >= 0.4
    assert conditions["blank"]["answers_changed"] >= 0.5
    rows = (tmp_path / "control" / "image_control.csv").read_text().splitlines()
    assert rows[0].startswith("condition,n,accuracy") and len(rows) == 5
    assert (tmp_path / "control" / "image_control.png").is_file()
