"""Config loading, --options overrides, variant merging, `base:` layers and registry look-ups."""
import pytest

from skingpt4.common import registry
from skingpt4.common.config import ConfigError, load_config, parse_options
from skingpt4.models.build import model_config


def test_registry_lists_valid_choices():
    assert "vicuna_v0" in registry.chat_templates
    with pytest.raises(KeyError, match=r"unknown chat template 'vicuna_v1'; did you mean 'vicuna_v0'\? valid "
                                       r"choices: .*vicuna_v0"):
        registry.chat_templates.get("vicuna_v1")


def test_load_config_with_options_and_variant_defaults(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  variant: tiny\n  max_txt_len: 100\n")
    cfg = load_config(path, ["model.max_txt_len=42", "model.template=llama2_chat"])
    model = model_config(cfg.model)
    assert model.max_txt_len == 42 and model.template == "llama2_chat"        # the user's values win
    assert model.vision.width == 64 and model.qformer.num_query_tokens == 32   # from the tiny variant YAML
    assert model.tokenizer.pad_token == "unk"                                  # the variant's tokenizer quirk
    assert model_config({"variant": "tiny"}).template == "vicuna_v0"           # the variant names its template


def test_base_layers_merge_in_order_and_interpolate_across_sections(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  variant: tiny\nrun:\n  init_lr: 1.0\n  output_dir: out/${model.variant}\n")
    (tmp_path / "b.yaml").write_text("run:\n  init_lr: 2.0\n  seed: 7\n")
    (tmp_path / "c.yaml").write_text("base: [a.yaml, b.yaml]\nrun:\n  seed: 9\n")
    cfg = load_config(tmp_path / "c.yaml", ["model.variant=vicuna_7b"])
    assert (cfg.run.init_lr, cfg.run.seed, cfg.run.output_dir) == (2.0, 9, "out/vicuna_7b")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match=r"base chain loops"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "lost.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"config file not found: '.*nope.yaml' \(the base of"):
        load_config(tmp_path / "lost.yaml")


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: '/nope.yaml'"):
        load_config("/nope.yaml")
    path = tmp_path / "cfg.yaml"
    path.write_text("modle:\n  variant: tiny\n")
    with pytest.raises(ConfigError, match=r"unknown key 'config.modle' \(did you mean 'model'\?\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"--options entries look like key.subkey=value, got 'run.lr'"):
        parse_options(["run.lr"])
    with pytest.raises(ConfigError, match=r"bad value for 'model.max_txt_len'"):
        model_config({"variant": "tiny", "max_txt_len": "many"})
    with pytest.raises(ConfigError, match=r"unknown model.variant 'tinny'; did you mean 'tiny'"):
        model_config({"variant": "tinny"})
    with pytest.raises(ConfigError, match=r"unknown model.template 'vicuna'; did you mean 'vicuna_v0'"):
        model_config({"variant": "tiny", "template": "vicuna"})
    with pytest.raises(ConfigError, match=r"unknown key 'model.prompt_template'"):  # the template owns the format
        model_config({"variant": "tiny", "prompt_template": "{}"})
