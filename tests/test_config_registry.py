"""Config loading, --options overrides, default merging and registry look-ups."""
import pytest

from skingpt4.common import registry
from skingpt4.common.config import ConfigError, load_config, parse_options
from skingpt4.models.skin_gpt4 import model_config


def test_registry_lists_valid_choices():
    assert "skin_gpt4" in registry.models
    with pytest.raises(KeyError, match=r"unknown model 'skin_gtp4'; did you mean 'skin_gpt4'\? valid choices: "
                                       r".*skin_gpt4"):
        registry.models.get("skin_gtp4")


def test_load_config_with_options_and_defaults(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  arch: skin_gpt4\n  model_type: tiny\n  max_txt_len: 100\n")
    cfg = load_config(path, ["model.max_txt_len=42", "model.end_sym=</s>"])
    model = model_config(cfg.model)
    assert model.max_txt_len == 42 and model.end_sym == "</s>"     # the user's values win
    assert model.vision.width == 64 and model.qformer.num_query_tokens == 32   # from the tiny default YAML
    assert model.prompt_template == "###Human: {} ###Assistant: "  # from the schema


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: '/nope.yaml'"):
        load_config("/nope.yaml")
    path = tmp_path / "cfg.yaml"
    path.write_text("modle:\n  arch: skin_gpt4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'config.modle' \(did you mean 'model'\?\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"--options entries look like key.subkey=value, got 'run.lr'"):
        parse_options(["run.lr"])
    with pytest.raises(ConfigError, match=r"bad value for 'model.max_txt_len'"):
        model_config({"model_type": "tiny", "max_txt_len": "many"})
