"""The tiny world (docs/model.md, "The tiny model"): a synthetic world of skin drawings in which learning is
possible and visible on a CPU, and the tiny pretrained SkinGPT-4 assets built in it, in the real file formats.

  world.py          how a label looks: concept glyphs, and lesions whose class is a combination of concepts in
                    confusable pairs (data_prep/make_synthetic.py draws the synthetic datasets with it)
  encoders.py       the tiny Q-Former pretrained on the world (as BLIP-2's was on photos), and its probe
  corpus.py         the tiny LLM's clinical corpus (corpus.json), laid out by `skingpt4.prompting.layout`
  llm.py            the tiny LLM's pretraining, through a SkinGPT4 of random weights (`SkinGPT4.embed`)
  assets.py         the build, its fingerprint cache and CLI:  python -m skingpt4.tiny --out tiny_assets
  llama3.py         a tiny Llama-3-style LLM for the `tiny_llama3` variant
  random_models.py  full-size and small SkinGPT-4s of random weights (benchmarks)
  baselines.py      trivial pixel classifiers (RGB-histogram logistic regression, hue-histogram 1-NN): how hard
                    the world is
  learning.py       the main job's report: did the pipeline learn?

It uses the model package through its public API (`build_model`, `SkinGPT4`); the model never imports it. Nothing
here is a medical model.
"""
