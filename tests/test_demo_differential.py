"""The demo's differential panel shows what chat's `assess` decides (docs/inference.md, "Demo"): uncalibrated
output is labelled and abstains; with a calibration, a lesion of its own world is named and a blank or noisy photo
abstains as out of distribution; a stale calibration file and a served model say why there is no differential."""
import shutil

import pytest
import torch

from calibration_helpers import blank_image, dermnet_folder, noise_image
from skingpt4.chat import ChatEngine
from skingpt4.chat.calibration_file import Calibration
from skingpt4.chat.differential import calibration_path, write_calibration
from skingpt4.chat.ood import OODReference, image_features
from skingpt4.common.images import load_image
from skingpt4.demo.differential_panel import NOT_SERVED, DifferentialPanel
from skingpt4.models import build_model
from skingpt4.models.identity import model_identity
from skingpt4.prompting.clinical import CLINICAL_PROMPTS


def conversation(engine, image):
    return engine.new_conversation(image)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return [load_image(p) for p in sorted(dermnet_folder(root / "val", 4, seed=1, folders=16).rglob("*.jpg"))]


@pytest.fixture(scope="module")
def calibrated_engine(tiny_assets, tmp_path_factory, world):
    ckpt = tmp_path_factory.mktemp("ckpt") / "projection.pth"
    shutil.copy(tiny_assets / "projection.pth", ckpt)
    model = build_model({"variant": "tiny", "ckpt": str(ckpt)})
    engine = ChatEngine(model)
    with torch.no_grad():
        features = torch.cat([image_features(model.encode_image(engine.image_processor(im).unsqueeze(0)))
                              for im in world])
    write_calibration(ckpt, Calibration(1.0, 0.0, "none", CLINICAL_PROMPTS[0],
                                        model_identity(model)["projection_sha256"], OODReference.fit(features),
                                        {"n": len(features)}))
    return engine, ckpt


def test_uncalibrated_panel_is_labelled_and_abstains(tiny_assets, world):
    engine = ChatEngine(build_model({"variant": "tiny", "ckpt": str(tiny_assets / "projection.pth")}))
    text = DifferentialPanel().markdown(engine, conversation(engine, world[0]), world[0])
    assert "(not calibrated)" in text and "names no diagnosis" in text


def test_calibrated_panel_names_a_lesion_and_abstains_on_blank_and_noise(calibrated_engine, world):
    engine, _ = calibrated_engine
    panel = DifferentialPanel()
    lesion = panel.markdown(engine, conversation(engine, world[0]), world[0])
    assert "(calibrated)" in lesion and "Unsure" not in lesion
    for image, why in ((blank_image(), "looks blank"), (noise_image(0), "only noise")):
        text = panel.markdown(engine, conversation(engine, image), image)
        assert "Unsure" in text and why in text


def test_stale_calibration_and_served_model_say_why(calibrated_engine, world, tmp_path):
    engine, ckpt = calibrated_engine
    stale = tmp_path / "projection.pth"
    shutil.copy(ckpt, stale)
    calibration_path(stale).write_text('{"format": "skingpt4-calibration", "version": 2, "temperature": "0.05"}')
    other = ChatEngine(build_model({"variant": "tiny", "ckpt": str(stale)}))
    text = DifferentialPanel().markdown(other, conversation(other, world[0]), world[0])
    assert text.startswith("Differential unavailable: calibration file") and "field '" in text

    class Served:  # what the demo holds with --server: a RemoteChatEngine names the model it is served under
        served_model = "skingpt4-0123456789abcdef"
    assert DifferentialPanel().markdown(Served(), None, world[0]) == NOT_SERVED
