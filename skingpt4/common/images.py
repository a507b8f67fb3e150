"""Read any image a user, a dataset or a web upload may hand us into an RGB, upright PIL image.

Every failure is an `ImageError` with a short, stable `.reason` that callers count and report
(preparation skips and tallies them; training skips the sample and counts it; the demo shows a message):

  missing       the path does not exist
  empty         zero bytes
  not_an_image  Pillow does not recognise the format
  too_large     more pixels than `max_pixels` (decompression-bomb guard), checked before decoding
  truncated     the file ends early
  unreadable    any other decoding error

Conversions (why each one): EXIF orientation is applied because phone photos are stored sideways with a
rotation tag; transparency is composited on white (not dropped to black, which would invent a dark lesion
border); 16/32-bit greyscale is rescaled to 8 bit (Pillow's plain convert() clips it to white); CMYK,
palette, greyscale and the rest go through Pillow's convert("RGB").
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

REASONS = ("missing", "empty", "not_an_image", "too_large", "truncated", "unreadable")

# 89.5 MP: Pillow's own warning threshold; a 12000x7000 dermatoscope scan still passes.
DEFAULT_MAX_PIXELS = 89_478_485

# Pillow formats that are not pictures load_image can decode on its own: external programs (EPS/PS need
# Ghostscript, WMF/EMF Windows), identification-only stubs (MPEG, IPTC) and scientific containers (BUFR, GRIB, HDF5).
_NOT_DECODABLE_HERE = {"EPS", "WMF", "MPEG", "BUFR", "GRIB", "HDF5", "IPTC"}


def _image_suffixes() -> tuple[str, ...]:
    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                        if fmt in Image.OPEN and fmt not in _NOT_DECODABLE_HERE))


# File name endings of every format load_image reads (.jpg, .png, .gif, .bmp, .webp, .tif, ...): the one list
# that data preparation, datasets and evaluation use to pick image files out of a folder.
IMAGE_SUFFIXES = _image_suffixes()


ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image]


class ImageError(ValueError):
    """An image that cannot be used; `.reason` is one of REASONS, `.detail` says what and where."""

    def __init__(self, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown image error reason '{reason}'; valid: {', '.join(REASONS)}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep reason/detail when sent between DataLoader worker processes
        return (type(self), (self.reason, self.detail))


def load_image(src: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Decode `src` (path, bytes, binary file object or PIL image) into an RGB, EXIF-oriented image.

    max_pixels: refuse images with more pixels, before decoding them (None: no limit of ours; Pillow's own
    hard limit, twice its MAX_IMAGE_PIXELS, still applies). name: how to call the image in messages
    (defaults to the path, or "<bytes>").
    """
    if isinstance(src, Image.Image):
        img, name = src, name or "<PIL image>"
        _check_size(img, max_pixels, name)
    else:
        fileobj, name = _open_source(src, name)
        img = _decode(fileobj, max_pixels, name)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as err:  # a corrupt EXIF block must not lose an otherwise good image
        warnings.warn(f"ignoring unreadable EXIF orientation of {name}: {err}")
    return to_rgb(img)


def _open_source(src: ImageSource, name: str | None) -> tuple[BinaryIO, str]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        if len(src) == 0:
            raise ImageError("empty", f"{name} has 0 bytes")
        return io.BytesIO(bytes(src)), name
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        name = name or str(path)
        if not path.is_file():
            raise ImageError("missing", f"no such file '{name}'")
        if path.stat().st_size == 0:
            raise ImageError("empty", f"'{name}' has 0 bytes")
        return io.BytesIO(path.read_bytes()), name
    if hasattr(src, "read"):
        data = src.read()
        return _open_source(data, name or getattr(src, "name", None) or "<file object>")
    raise TypeError(f"load_image takes a path, bytes, a binary file object or a PIL image, got {type(src).__name__}")


def _decode(fileobj: BinaryIO, max_pixels: int | None, name: str) -> Image.Image:
    with warnings.catch_warnings():
        # We apply our own, configurable limit below; Pillow's fixed one would only warn or raise early.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(fileobj)
        except UnidentifiedImageError as err:
            fileobj.seek(0)
            kind = _known_signature(fileobj.read(16))
            if kind:  # starts like an image but its header is cut or damaged
                raise ImageError("unreadable", f"'{name}' starts like a {kind} file but its header cannot be parsed") from err
            raise ImageError("not_an_image", f"'{name}' is not an image Pillow can read") from err
        except Image.DecompressionBombError as err:
            raise ImageError("too_large", f"'{name}': {err}") from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageError(_decode_error_reason(err), f"'{name}': {err}") from err
        _check_size(img, max_pixels, name)
        try:
            img.load()
        except Image.DecompressionBombError as err:
            raise ImageError("too_large", f"'{name}': {err}") from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageError(_decode_error_reason(err), f"'{name}': {err}") from err
    return img


def _decode_error_reason(err: Exception) -> str:
    # Pillow says "image file is truncated", "Truncated File Read" or "broken data stream" for cut files.
    message = str(err).lower()
    if isinstance(err, EOFError) or "truncated" in message or "broken data stream" in message:
        return "truncated"
    return "unreadable"


_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP",
               b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "WebP"}


def _known_signature(head: bytes) -> str | None:
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)


def _check_size(img: Image.Image, max_pixels: int | None, name: str) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError("unreadable", f"'{name}' has size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError("too_large", f"'{name}' is {width}x{height} = {width * height} pixels, "
                                      f"more than the limit of {max_pixels}")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (see the module docstring for why each branch exists)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit sources (PNG/TIFF) arrive as I;16 or I with values 0..65535.
        values = np.asarray(img, dtype=np.float64)
        scale = 257.0 if values.max(initial=0) > 255 or img.mode.startswith("I;16") else 1.0
        grey = np.clip(np.rint(values / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
