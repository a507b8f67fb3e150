"""Read any image a user, a dataset or a web upload may hand us into an RGB, upright PIL image.

Every failure is an `ImageError` with a short, stable `.reason` that callers count and report
(preparation skips and tallies them; training skips the sample and counts it; the demo shows a message):

  missing       the path does not exist (a dangling symbolic link included)
  not_a_file    the path is a directory, FIFO, socket or device, not a regular file (never opened for reading,
                so a FIFO named .jpg cannot hang the caller)
  empty         zero bytes
  not_an_image  Pillow does not recognise the format
  too_large     more bytes than `max_bytes` (checked before reading: a 3 GB file is never read into memory) or
                more pixels than `max_pixels` (decompression-bomb guard, checked from the header before decoding)
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
import stat
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

REASONS = ("missing", "not_a_file", "empty", "not_an_image", "too_large", "truncated", "unreadable")

# 89.5 MP: Pillow's own warning threshold; a 12000x7000 dermatoscope scan still passes.
DEFAULT_MAX_PIXELS = 89_478_485
# 512 MiB: above an uncompressed 8-bit RGB TIFF at the pixel limit (89.5 MP x 3 bytes = 268 MB), far below what
# would exhaust memory; a photo, even a dermatoscope scan, is tens of MB at most.
DEFAULT_MAX_BYTES = 512 * 2**20

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


def load_image(src: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None,
               max_bytes: int | None = DEFAULT_MAX_BYTES) -> Image.Image:
    """Decode `src` (path, bytes, binary file object or PIL image) into an RGB, EXIF-oriented image.

    max_pixels: refuse images with more pixels, before decoding them (None: no limit of ours; Pillow's own
    hard limit, twice its MAX_IMAGE_PIXELS, still applies). max_bytes: refuse sources larger than this, before
    reading them (None: no limit). name: how to call the image in messages (defaults to the path, or "<bytes>").
    """
    for key, limit in (("max_pixels", max_pixels), ("max_bytes", max_bytes)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{key} must be a whole number >= 1 or None (no limit), got {limit!r}")
    if isinstance(src, Image.Image):
        img, name = src, name or "<PIL image>"
        _check_size(img, max_pixels, name)
    else:
        fileobj, name = _open_source(src, name, max_bytes)
        img = _decode(fileobj, max_pixels, name)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as err:  # a corrupt EXIF block must not lose an otherwise good image
        warnings.warn(f"ignoring unreadable EXIF orientation of {name}: {err}")
    return to_rgb(img)


def _open_source(src: ImageSource, name: str | None, max_bytes: int | None,
                 from_reader: bool = False) -> tuple[BinaryIO, str]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        size = memoryview(src).nbytes
        if size == 0:
            raise ImageError("empty", f"{name} has 0 bytes")
        _check_bytes(size, max_bytes, name, known=not from_reader)
        return io.BytesIO(bytes(src)), name
    if isinstance(src, (str, os.PathLike)):
        name = name or str(src)
        return io.BytesIO(read_regular_file(src, max_bytes, name)), name
    if hasattr(src, "read"):
        # One byte more than the cap: enough to know it is too large without reading all of it.
        data = src.read() if max_bytes is None else src.read(max_bytes + 1)
        return _open_source(data, name or getattr(src, "name", None) or "<file object>", max_bytes, True)
    raise TypeError(f"load_image takes a path, bytes, a binary file object or a PIL image, got {type(src).__name__}")


def read_regular_file(path: Union[str, os.PathLike], max_bytes: int | None = DEFAULT_MAX_BYTES,
                      name: str | None = None) -> bytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes`, else an ImageError.

    The file is opened non-blocking and checked with fstat on the open descriptor (not a stat of the name
    before opening, which a rename could outwit): opening a FIFO this way returns at once, and a FIFO,
    directory, socket or device is refused before a single byte is read."""
    name = name or str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        detail = " (a dangling symbolic link)" if os.path.islink(path) else ""
        raise ImageError("missing", f"no such file '{name}'{detail}") from None
    except IsADirectoryError:  # Windows; POSIX opens a directory and fstat says what it is
        raise ImageError("not_a_file", f"'{name}' is a directory, not an image file") from None
    except OSError as err:
        raise ImageError("unreadable", f"'{name}': {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("not_a_file", f"'{name}' is {_file_kind(info.st_mode)}, not a regular image file")
        if info.st_size == 0:
            raise ImageError("empty", f"'{name}' has 0 bytes")
        _check_bytes(info.st_size, max_bytes, name)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            # Bounded even if the file grows after fstat.
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as err:
        raise ImageError("unreadable", f"'{name}': {err.strerror or err}") from None
    finally:
        os.close(fd)
    _check_bytes(len(data), max_bytes, name, known=False)  # it grew after fstat
    if not data:
        raise ImageError("empty", f"'{name}' has 0 bytes")
    return data


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def _check_bytes(size: int, max_bytes: int | None, name: str, known: bool = True) -> None:
    """known=False: `size` is what a read bounded at max_bytes + 1 returned, not the whole size."""
    if max_bytes is not None and size > max_bytes:
        raise ImageError("too_large", f"'{name}' has {size if known else 'more than ' + str(max_bytes)} bytes, "
                                      f"more than the file-size limit of {max_bytes}")


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
