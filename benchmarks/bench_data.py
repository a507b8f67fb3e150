"""Data-loading throughput: images/s through the training transform (decode + RandomResizedCrop 224 +
normalise + collate), by DataLoader worker count, for a prepared folder and for webdataset shards.

    python -m benchmarks.bench_data                       # generates synthetic 512x512 data in a temp dir
    python -m benchmarks.bench_data --folder data/prepared/dermnet --shards data/shards/dermnet --workers 0 2 4 8

The paper's schedule consumes about 40 samples/s over 8 GPUs (batch 2 per GPU); the loader keeps up when the
figure here, per GPU process, is well above 5 images/s.
"""
from __future__ import annotations


import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from skingpt4.datasets import build_datasets, collate


def measure(dataset, workers: int, batch_size: int, min_images: int) -> tuple[float, int]:
    """-> (images/s, images) over whole passes until at least `min_images` went through (first batch excluded:
    it pays for starting the workers)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, shuffle=False)
    images, start = 0, None
    while images < min_images:
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            images += 0 if batch is None else batch["image"].shape[0]
    return images / (time.perf_counter() - start), images


def synthetic_data(root: Path, size: int, per_class: int) -> tuple[Path, Path]:
    from data_prep.make_synthetic import make_synthetic
    from data_prep.write_shards import write_shards

    make_synthetic(root, per_class=per_class, test_per_class=1, size=size, stats=False, log=lambda m: None)
    write_shards(root / "prepared" / "dermnet", root / "shards" / "dermnet", maxcount=16)
    return root / "prepared" / "dermnet", root / "shards" / "dermnet"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="prepared folder (default: synthetic, generated)")
    parser.add_argument("--shards", type=Path, help="webdataset shard folder (default: synthetic, generated)")
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({0, 1, 2, os.cpu_count() or 1}),
                        help="DataLoader worker counts to measure (default: 0, 1, 2 and the number of cores)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--min-images", type=int, default=400, help="images timed per measurement")
    parser.add_argument("--image-size", type=int, default=512, help="side of generated images")
    parser.add_argument("--per-class", type=int, default=8, help="generated images per Dermnet folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in DataLoader workers; keeps worker 0 comparable
    with tempfile.TemporaryDirectory() as tmp:
        folder, shards = args.folder, args.shards
        if folder is None or shards is None:
            gen_folder, gen_shards = synthetic_data(Path(tmp), args.image_size, args.per_class)
            folder, shards = folder or gen_folder, shards or gen_shards
        cfg = OmegaConf.create({
            "folder": {"builder": "image_text_pairs", "storage": str(folder)},
            "shards": {"builder": "webdataset", "shards": str(shards), "repeat": False, "shuffle_buffer": 100},
        })
        sources = build_datasets(cfg)
        print(f"cpu cores: {os.cpu_count()}, torch threads in the main process: 1, batch size {args.batch_size}")
        print(f"folder: {folder} ({len(sources[0][1])} images); shards: {shards}")
        print(f"{'source':<8} {'workers':>7} {'images/s':>9} {'timed images':>13}")
        for name, dataset, _ in sources:
            for workers in args.workers:
                rate, n = measure(dataset, workers, args.batch_size, args.min_images)
                print(f"{name:<8} {workers:>7} {rate:>9.1f} {n:>13}", flush=True)


if __name__ == "__main__":
    main()
