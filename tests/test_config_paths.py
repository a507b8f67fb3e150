"""Every path a config names is checked at once, before anything loads, from the declarations the parts keep next
to their code (`ConfigPath`): each evaluation task, each registered dataset builder, the runner and the model. The
tests walk every registered task and builder, so a new one that forgets to declare a path it reads, or an entry
point that stops reading the declarations, fails here."""
import pytest
from omegaconf import OmegaConf

from skingpt4.common import registry
from skingpt4.common.config import ConfigError, raise_path_problems
from skingpt4.datasets import dataset_path_problems
from skingpt4.evaluation.tasks import TASKS

import skingpt4.datasets.builders  # noqa: F401  (registers the builders)


def _wrong(cfg, paths, where, prefix=""):
    """Point every declared path at a file that does not exist; returns the keys that must be reported."""
    keys = []
    for i, path in enumerate(paths):
        missing = str(where / f"missing_{i}")
        OmegaConf.update(cfg, path.key, [missing] if path.each else missing, force_add=True)
        keys.append(f"{prefix}{path.key}[0]" if path.each else f"{prefix}{path.key}")
    return keys


def _reported(problems):
    return {p.split("'")[1] for p in problems}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_path_a_task_declares_is_reported(task, tiny_assets, tmp_path):
    cfg = OmegaConf.create({"model": {"variant": "tiny", "ckpt": str(tmp_path / "gone.pth")}})
    keys = _wrong(cfg, TASKS[task].paths, tmp_path)
    assert keys, f"task {task} declares no path"
    if TASKS[task].uses_model:
        keys.append("model.ckpt")
    problems = TASKS[task].path_problems(cfg)
    assert _reported(problems) == set(keys) and len(problems) == len(keys)
    with pytest.raises(ConfigError, match=rf"^{len(keys)} paths in the config need fixing: \(1\) config key"):
        raise_path_problems(problems)


@pytest.mark.parametrize("builder", sorted(registry.datasets))
def test_every_path_a_dataset_builder_declares_is_reported(builder, tmp_path):
    paths = registry.datasets.get(builder)().paths
    cfg = OmegaConf.create({"datasets": {"mine": {"builder": builder}}})
    keys = _wrong(cfg.datasets.mine, paths, tmp_path, prefix="datasets.mine.")
    assert keys, f"dataset builder {builder} declares no path"
    assert _reported(dataset_path_problems(cfg.datasets)) == set(keys)
    (tmp_path / "missing_0").mkdir()  # now it exists (a folder is what every builder's storage or shards may be)
    (tmp_path / "missing_0" / "shard-000000.tar").write_bytes(b"\0" * 1024)
    assert dataset_path_problems(cfg.datasets) == []


def test_a_correct_task_config_has_no_problems(tiny_assets, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    cfg = OmegaConf.create({"model": {"variant": "tiny", "ckpt": str(tiny_assets / "projection.pth")},
                            "evaluation": {"cases": str(cases)}})
    assert TASKS["image_control"].path_problems(cfg) == []
    raise_path_problems([])  # nothing to say: no error


@pytest.mark.parametrize("task", sorted(name for name, t in TASKS.items()
                                        if any(p.key == "evaluation.cases" for p in t.paths)))
def test_evaluate_lists_the_model_and_the_cases_for_every_task_that_reads_both(task, tiny_assets, tmp_path, capsys):
    from evaluate import main as evaluate_main

    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {{variant: tiny, ckpt: {tmp_path / 'gone.pth'}}}\n"
                      f"evaluation: {{cases: {tmp_path / 'no_cases'}}}\n")
    options = ["--options", f"evaluation.ablation.checkpoints.a={tiny_assets / 'projection.pth'}"]
    assert evaluate_main(["--cfg-path", str(config), "--task", task, "--out", str(tmp_path / "out"), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 2 paths in the config need fixing: (1) config key 'model.ckpt': no such file")
    assert "(2) config key 'evaluation.cases': no such" in err and len(err.splitlines()) == 1
