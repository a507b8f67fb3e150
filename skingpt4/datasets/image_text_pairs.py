"""Map-style dataset over the MiniGPT-4 / SkinGPT-4 folder format:

    <storage>/filter_cap.json   {"annotations": [{"image_id": "...", "caption": "...", ...metadata}]}
    <storage>/image/<image_id>.jpg   (or the file named by a record's "image" field, or .png/.jpeg)

`data_prep/prepare_*.py` writes this format for SKINCON and Dermnet; doctors' notes already come in it.
Records whose image file is absent are dropped (and counted as "missing") when the dataset is built; an
image that turns out bad when read returns None (counted, logged) so a training run never stops for it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torch.utils.data import Dataset

from skingpt4.common.config import ConfigError
from skingpt4.common.images import IMAGE_SUFFIXES, ImageError, load_image
from skingpt4.datasets.bad_images import BadSampleCounter

logger = logging.getLogger(__name__)



def read_annotations(path: Path) -> list[dict[str, Any]]:
    """Read and check filter_cap.json; a malformed file is an error naming the file and the record."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read '{path}': {err}") from err
    records = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise ConfigError(f"'{path}' must hold {{\"annotations\": [{{\"image_id\": ..., \"caption\": ...}}, ...]}}")
    for index, record in enumerate(records):
        if not isinstance(record, dict) or "image_id" not in record or "caption" not in record:
            raise ConfigError(f"'{path}': annotations[{index}] needs 'image_id' and 'caption', got {record!r:.200}")
    return records


def index_images(image_dir: Path) -> dict[str, str]:
    """file name and stem -> file name, for every image file directly in `image_dir` (one directory scan)."""
    names: dict[str, str] = {}
    for entry in sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        names.setdefault(entry, entry)
        names.setdefault(Path(entry).stem, entry)
    return names


class ImageTextPairsDataset(Dataset):
    def __init__(self, storage: str | Path, vis_processor: Callable, text_processor: Callable, name: str,
                 max_pixels: Optional[int], required_fields: Sequence[str] = ()):
        storage = Path(storage)
        self.name = name
        self.image_dir = storage / "image"
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.max_pixels = max_pixels
        self.bad = BadSampleCounter(name)
        ann_path = storage / "filter_cap.json"
        if not ann_path.is_file() or not self.image_dir.is_dir():
            raise ConfigError(f"dataset '{name}': '{storage}' must contain filter_cap.json and image/ "
                              "(prepare it with the commands in data_prep/README.md)")
        records = read_annotations(ann_path)
        for field in required_fields:
            lacking = [r["image_id"] for r in records if field not in r]
            if lacking:
                raise ConfigError(f"dataset '{name}': {len(lacking)} records of '{ann_path}' lack '{field}' "
                                  f"(first: {lacking[0]!r}); is this the right prepared folder for '{name}'?")
        files = index_images(self.image_dir)
        self.records: list[dict[str, Any]] = []
        for record in records:
            file = files.get(str(record.get("image", record["image_id"])))
            if file is None:
                self.bad.add("missing", f"no image for image_id {record['image_id']!r} in '{self.image_dir}'")
                continue
            self.records.append({**record, "image": file})
        if not self.records:
            raise ConfigError(f"dataset '{name}': no usable records in '{storage}'")
        logger.info("dataset '%s': %d image-text pairs from '%s'", name, len(self.records), storage)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        record = self.records[index]
        try:
            image = load_image(self.image_dir / record["image"], max_pixels=self.max_pixels)
        except ImageError as err:
            self.bad.add(err.reason, err.detail)
            return None
        caption = self.text_processor(record["caption"])
        if not caption:
            self.bad.add("bad_record", f"empty caption for image_id {record['image_id']!r}")
            return None
        metadata = {k: v for k, v in record.items() if k not in ("caption", "image")}
        return {"image": self.vis_processor(image), "text_input": caption, **metadata, "source": self.name}
