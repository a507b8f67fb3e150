"""Statistics of a prepared set: concept counts (paper Table 1), class counts (Table 2) and skin-type counts —
printed as a table, written as CSV and drawn as a bar chart PNG. The two skin-tone scales of the sources are
never mixed: Fitzpatrick types I-VI (Fitzpatrick17k) and DDI's bands I-II / III-IV / V-VI each get their own
section and panel, and images without a skin type (or with a group of neither scale) a third.

    python -m data_prep.stats --src data/prepared/skincon --out data/stats/skincon
    -> data/stats/skincon/stats.csv (section,name,count) and data/stats/skincon/stats.png
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: its imports need the package form
    raise SystemExit("run it from the repository root as: python -m data_prep.stats ...")

import argparse
import csv
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from data_prep.common import PrepareError
from skingpt4.common.config import ConfigError
from skingpt4.datasets.image_text_pairs import read_annotations
from skingpt4.evaluation.metrics import skin_scale

SECTIONS = {"concepts": "Concept", "label": "Class", "skin_type": "Skin type"}
SKIN_TYPE_ORDER = ["I", "II", "III", "IV", "V", "VI", "I-II", "III-IV", "V-VI", "unknown"]
# the skin_type section, shown per scale
SCALE_SECTIONS = {"fitzpatrick": "Fitzpatrick skin type (I-VI)", "ddi": "DDI skin-tone band (I-II, III-IV, V-VI)",
                  "other": "Skin type unknown or of another scale"}


def shown_sections(stats: dict[str, list[tuple[str, int]]]) -> list[tuple[str, list[tuple[str, int]]]]:
    """(title, rows) in display order, the skin types split by scale (only the scales present)."""
    out = []
    for section, rows in stats.items():
        if section != "skin_type":
            out.append((SECTIONS[section], rows))
            continue
        by_scale: dict[str, list[tuple[str, int]]] = {}
        for name, count in rows:
            by_scale.setdefault(skin_scale(name), []).append((name, count))
        out += [(SCALE_SECTIONS[scale], by_scale[scale]) for scale in SCALE_SECTIONS if scale in by_scale]
    return out


def compute_stats(records: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    """{section: [(name, count)]}, most frequent first (skin types in scale order); absent sections left out."""
    counters: dict[str, Counter] = {}
    for record in records:
        if "concepts" in record:
            counters.setdefault("concepts", Counter()).update(record["concepts"])
        if "label" in record:
            counters.setdefault("label", Counter())[record["label"]] += 1
        if "skin_type" in record:
            counters.setdefault("skin_type", Counter())[record["skin_type"] or "unknown"] += 1
    out = {}
    for section, counter in counters.items():
        if section == "skin_type":
            order = {name: i for i, name in enumerate(SKIN_TYPE_ORDER)}
            out[section] = sorted(counter.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
        else:
            out[section] = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return out


def format_table(stats: dict[str, list[tuple[str, int]]], total: int) -> str:
    lines = [f"{total} records"]
    for title, rows in shown_sections(stats):
        width = max(len(title), *(len(name) for name, _ in rows))
        lines += ["", f"{title:<{width}}  {'count':>6}  {'share':>6}", "-" * (width + 16)]
        lines += [f"{name:<{width}}  {count:>6}  {100 * count / total:5.1f}%" for name, count in rows]
    return "\n".join(lines)


def write_csv(stats: dict[str, list[tuple[str, int]]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["section", "name", "count"])
        for title, rows in shown_sections(stats):
            writer.writerows([title, name, count] for name, count in rows)


def draw_chart(stats: dict[str, list[tuple[str, int]]], path: Path, title: str) -> None:
    """One horizontal bar panel per section; each skin-type scale in its own panel, with its own axis."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    sections = shown_sections(stats)
    fig, axes = plt.subplots(len(sections), 1, squeeze=False,
                             figsize=(10, sum(1.5 + 0.22 * len(rows) for _, rows in sections)))
    for ax, (section, rows) in zip(axes[:, 0], sections):
        names, counts = [n for n, _ in rows][::-1], [c for _, c in rows][::-1]
        ax.barh(names, counts, color="#4c72b0")
        ax.set_title(f"{section}: {sum(counts)} images")
        ax.set_xlabel("images")
        ax.tick_params(axis="y", labelsize=8)
        for y, count in enumerate(counts):
            ax.text(count, y, f" {count}", va="center", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def dataset_stats(src: Path, out: Optional[Path]) -> tuple[str, dict]:
    try:
        records = read_annotations(Path(src) / "filter_cap.json")
    except ConfigError as err:
        raise PrepareError(str(err)) from err
    stats = compute_stats(records)
    if not stats:
        raise PrepareError(f"records in '{src}' carry no concepts, label or skin_type to count")
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_csv(stats, Path(out) / "stats.csv")
        draw_chart(stats, Path(out) / "stats.png", f"{Path(src).name}: {len(records)} images")
    return format_table(stats, len(records)), stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="prepared folder (filter_cap.json)")
    parser.add_argument("--out", type=Path, help="folder for stats.csv and stats.png (table only if omitted)")
    args = parser.parse_args(argv)
    try:
        table, _ = dataset_stats(args.src, args.out)
    except PrepareError as err:
        print(f"error: {err}")
        return 2
    print(table)
    if args.out:
        print(f"\nwrote {args.out / 'stats.csv'} and {args.out / 'stats.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
