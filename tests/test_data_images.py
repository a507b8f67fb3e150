"""load_image and the processors: every awkward image kind is converted exactly or refused with a named reason."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from skingpt4.common.config import ConfigError
from skingpt4.common.images import DEFAULT_MAX_BYTES, REASONS, ImageError, load_image
from skingpt4.processors import build_processor
from skingpt4.processors.image import CLIP_MEAN, CLIP_STD


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def pattern(w=40, h=24) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb needs no more to be refused)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- sources
def test_all_source_kinds_give_the_same_rgb(tmp_path):
    data = encode(Image.fromarray(pattern()), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    expected = pattern()
    for src in (path, str(path), data, bytearray(data), io.BytesIO(data), Image.open(io.BytesIO(data))):
        img = load_image(src)
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), expected)


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="takes a path, bytes, a binary file object or a PIL image, got int"):
        load_image(3)


# ---------------------------------------------------------------- conversions (exact references)
def test_grayscale_becomes_equal_channels():
    grey = pattern()[..., 0]
    out = np.asarray(load_image(encode(Image.fromarray(grey), "PNG")))
    assert np.array_equal(out, np.stack([grey] * 3, axis=-1))


def test_palette_is_looked_up():
    img = Image.fromarray(pattern()).quantize(16)
    palette = np.array(img.getpalette()[: 16 * 3], dtype=np.uint8).reshape(16, 3)
    expected = palette[np.asarray(img)]
    assert np.array_equal(np.asarray(load_image(encode(img, "PNG"))), expected)


def test_rgba_and_transparent_palette_are_composited_on_white():
    rgb, alpha = pattern(), np.random.default_rng(1).integers(0, 256, (24, 40), dtype=np.uint8)
    img = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    out = np.asarray(load_image(encode(img, "PNG"))).astype(int)
    a = alpha[..., None].astype(float) / 255
    assert np.abs(out - (rgb * a + 255 * (1 - a))).max() <= 1  # alpha_composite rounds
    pal = Image.new("P", (4, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putdata([0, 1, 0, 1])
    pal.info["transparency"] = 0
    out = np.asarray(load_image(encode(pal, "PNG", transparency=0)))
    assert out[0].tolist() == [[255, 255, 255], [200, 100, 50], [255, 255, 255], [200, 100, 50]]


def test_cmyk_is_converted():
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # pure cyan
    out = np.asarray(load_image(encode(cmyk, "TIFF")))
    assert out.reshape(-1, 3).tolist() == [[0, 255, 255]] * 64
    jpeg = load_image(encode(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG", quality=100))  # magenta
    assert np.abs(np.asarray(jpeg).astype(int) - [255, 0, 255]).max() <= 3


def test_16_bit_greyscale_is_rescaled_not_clipped():
    values = (np.arange(24 * 40).reshape(24, 40) * 68).astype(np.uint16)  # up to 65212
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = np.asarray(load_image(encode(img, "PNG")))
    assert np.array_equal(out[..., 0], np.rint(values / 257).astype(np.uint8))
    assert out[..., 0].max() == 254  # Pillow's plain convert("RGB") would saturate these at 255


@pytest.mark.parametrize("orientation,stored", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90),
                                                (8, Image.Transpose.ROTATE_270), (2, Image.Transpose.FLIP_LEFT_RIGHT)])
def test_exif_orientation_is_applied(orientation, stored):
    upright = Image.fromarray(pattern())
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(upright.transpose(stored), "PNG", exif=exif)  # stored as a camera would, tagged to be turned
    out = load_image(data)
    assert out.size == upright.size and np.array_equal(np.asarray(out), np.asarray(upright))


# ---------------------------------------------------------------- refusals with named reasons
def test_reasons(tmp_path):
    good_jpeg = encode(Image.fromarray(pattern(200, 200)), "JPEG")
    cases = {
        "missing": tmp_path / "nope.jpg",
        "empty": b"",
        "not_an_image": b"this is a text file, not a photo",
        "truncated": good_jpeg[: len(good_jpeg) // 2],
        "unreadable": b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
        "too_large": png_header_only(30000, 30000),  # 900 MP: over Pillow's own hard limit too
        "not_a_file": tmp_path,
    }
    (tmp_path / "zero.jpg").write_bytes(b"")
    cases_from_files = {"empty": tmp_path / "zero.jpg"}
    for reason, src in [*cases.items(), *cases_from_files.items()]:
        with pytest.raises(ImageError) as info:
            load_image(src)
        assert info.value.reason == reason, (reason, info.value)
        assert str(info.value).startswith(f"{reason}: ")
    assert set(cases) == set(REASONS)


def test_max_pixels_is_configurable():
    data = encode(Image.new("L", (1000, 1000)), "PNG")
    with pytest.raises(ImageError, match=r"too_large: '<bytes>' is 1000x1000 = 1000000 pixels, more than the limit of 999999"):
        load_image(data, max_pixels=999_999)
    assert load_image(data, max_pixels=1_000_000).size == (1000, 1000)
    assert load_image(data, max_pixels=None).size == (1000, 1000)


# ---------------------------------------------------------------- what is never read: not a file, too many bytes
def test_only_regular_files_are_read_and_a_fifo_does_not_hang(tmp_path):
    import os
    import threading

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)  # no writer: a plain open() for reading would block forever
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    cases = {fifo: ("not_a_file", f"not_a_file: '{fifo}' is a FIFO (named pipe), not a regular image file"),
             tmp_path / "folder.jpg": ("not_a_file", f"not_a_file: '{tmp_path / 'folder.jpg'}' is a directory, not a "
                                                     "regular image file"),
             "/dev/zero": ("not_a_file", "not_a_file: '/dev/zero' is a character device, not a regular image file"),
             tmp_path / "dangling.jpg": ("missing", f"missing: no such file '{tmp_path / 'dangling.jpg'}' "
                                                    "(a dangling symbolic link)")}
    results = {}
    worker = threading.Thread(target=lambda: results.update(
        {src: _refusal(src) for src in cases}), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "load_image hung on a FIFO"
    assert results == cases


def _refusal(src):
    with pytest.raises(ImageError) as info:
        load_image(src)
    return info.value.reason, str(info.value)


def test_file_size_cap_is_checked_before_reading(tmp_path, monkeypatch):
    import os

    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as f:  # a sparse 3 GB file: reading it whole would need 3 GB of memory
        f.truncate(3 * 2**30)
    with monkeypatch.context() as patch:  # refused from fstat: the file is never opened for reading
        patch.setattr(os, "fdopen", lambda *a, **k: pytest.fail("the file was read"))
        with pytest.raises(ImageError, match=rf"^too_large: '{huge}' has {3 * 2**30} bytes, more than the file-size "
                                             rf"limit of {DEFAULT_MAX_BYTES}$"):
            load_image(huge)
    data = encode(Image.fromarray(pattern()), "PNG")
    for src in (data, io.BytesIO(data)):
        with pytest.raises(ImageError) as info:
            load_image(src, max_bytes=len(data) - 1)
        assert info.value.reason == "too_large" and "file-size limit" in str(info.value)
        load_image(io.BytesIO(data) if not isinstance(src, bytes) else data, max_bytes=len(data))
    (tmp_path / "ok.png").write_bytes(data)
    assert load_image(tmp_path / "ok.png", max_bytes=len(data)).size == (40, 24)
    with pytest.raises(ImageError, match="too_large"):
        load_image(tmp_path / "ok.png", max_bytes=len(data) - 1)
    assert os.path.getsize(huge) == 3 * 2**30


@pytest.mark.parametrize("key,value", [("max_pixels", -5), ("max_pixels", 0), ("max_bytes", -1), ("max_bytes", 1.5)])
def test_limits_must_be_positive_whole_numbers(key, value):
    with pytest.raises(ValueError, match=rf"^{key} must be a whole number >= 1 or None \(no limit\), got {value}$"):
        load_image(encode(Image.new("RGB", (4, 4)), "PNG"), **{key: value})


def test_image_error_survives_pickling():
    import pickle
    err = pickle.loads(pickle.dumps(ImageError("truncated", "x.jpg")))
    assert (err.reason, err.detail, str(err)) == ("truncated", "x.jpg", "truncated: x.jpg")


# ---------------------------------------------------------------- processors
def test_eval_processor_matches_a_numpy_reference():
    img = Image.fromarray(pattern(300, 180))
    out = build_processor({"name": "blip2_image_eval"})(img)
    resized = np.asarray(img.resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    expected = ((resized - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    # torchvision resizes PIL images with Pillow's bicubic filter, so the two agree to float precision.
    assert np.abs(out.numpy() - expected).max() < 1e-5


def test_train_processor_crops_without_flipping():
    left_red = np.zeros((224, 448, 3), np.uint8)
    left_red[:, :224] = (255, 0, 0)
    left_red[:, 224:] = (0, 0, 255)
    proc = build_processor({"name": "blip2_image_train", "image_size": 64})
    red = (1 - CLIP_MEAN[0]) / CLIP_STD[0]
    for seed in range(20):
        torch.manual_seed(seed)
        out = proc(Image.fromarray(left_red))
        assert out.shape == (3, 64, 64)
        # the crop covers >= half the area with aspect <= 4/3, so it always straddles the middle: red stays left
        assert abs(out[0, :, 0].mean().item() - red) < 1e-3 and out[2, :, -1].mean() > 1


def test_train_processor_random_crop_varies_and_is_seeded():
    img = Image.fromarray(pattern(300, 300))
    proc = build_processor({"name": "blip2_image_train"})
    torch.manual_seed(0)
    a, b = proc(img), proc(img)
    torch.manual_seed(0)
    assert not torch.equal(a, b) and torch.equal(proc(img), a)


def test_caption_processor():
    proc = build_processor({"name": "blip_caption"})
    assert proc("  This lesion\n shows\t erythema.  ") == "This lesion shows erythema."
    assert build_processor({"name": "blip_caption", "max_words": 3})("one two three four") == "one two three"


def test_build_processor_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'datasets\.x\.vis_processor\.imagesize' \(did you mean 'image_size'\?\)"):
        build_processor({"name": "blip2_image_train", "imagesize": 3}, "datasets.x.vis_processor")
    with pytest.raises(ConfigError, match=r"'v\.name': unknown processor 'blip2_image_evl'; did you mean 'blip2_image_eval'\?"):
        build_processor({"name": "blip2_image_evl"}, "v")
    with pytest.raises(ConfigError, match=r"'v' needs a 'name'"):
        build_processor({"image_size": 3}, "v")
    with pytest.raises(ConfigError, match=r"'v': need 0 < min_scale <= max_scale <= 1, got min_scale=0.9, max_scale=0.5"):
        build_processor({"name": "blip2_image_train", "min_scale": 0.9, "max_scale": 0.5}, "v")
    with pytest.raises(ValueError, match="expects an RGB image, got mode L"):
        build_processor({"name": "blip2_image_eval"})(Image.new("L", (8, 8)))
