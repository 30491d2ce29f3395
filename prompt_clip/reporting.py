"""Raw results (JSON/CSV) and the paper-style markdown tables and plot rendered from them.

Records are flat dicts written by `prompt_clip.protocols.ProtocolRunner`, one per (protocol, method, dataset,
seed[, shots]). Tables are always rebuilt from records, so a table can be re-rendered without training again:

```python
records = load_results("results/results.json")
print(render_tables(records))
```
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"

#: Display names of the built-in methods, in the order tables list them.
METHOD_NAMES = {
    "zeroshot": "Zero-shot CLIP",
    "coop": "CoOp",
    "cocoop": "CoCoOp",
    "vpt": "VPT",
    "vp": "VP",
    "dlp": "DLP",
    "ivlp": "IVLP",
    "maple": "MaPLe",
    "promptsrc": "PromptSRC",
    "upt": "UPT",
    "bmip": "BMIP",
    "bloom": "Bloom",
    "ammpl": "AMMPL",
}


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


#: The fields that identify one run's record; a newer record with the same values replaces the older one.
RECORD_KEY = ("protocol", "method", "dataset", "source", "seed", "shots")


def _record_key(record: dict[str, Any]) -> tuple:
    return tuple(record.get(field) for field in RECORD_KEY)


def save_results(
    records: Sequence[dict[str, Any]], output_dir: str | os.PathLike, merge: bool = True
) -> tuple[Path, Path]:
    """Writes `results.json` and `results.csv` (every field) into `output_dir`, atomically.

    Args:
        records: the records to write.
        output_dir (`str` or `os.PathLike`): the folder.
        merge (`bool`, defaults to `True`): keep the records already in `results.json` that `records` does not
            replace (same protocol, method, dataset, source, seed and shots), so that several sweeps into one
            folder add up instead of overwriting each other.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = folder / RESULTS_JSON, folder / RESULTS_CSV
    if merge and json_path.is_file():
        new_keys = {_record_key(record) for record in records}
        kept = [record for record in load_results(json_path) if _record_key(record) not in new_keys]
        records = [*kept, *records]
    _atomic_write_text(json_path, json.dumps(list(records), indent=2) + "\n")
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    _atomic_write_text(csv_path, buffer.getvalue())
    return json_path, csv_path


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads records from a `results.json` file (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"No results file at {path}; run a protocol with an output_dir first.")
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise ValueError(f"{path} does not hold a list of result records.")
    return records


# -- statistics -------------------------------------------------------------------------------------------------


# Spreads are population standard deviations over seeds (numpy's default, ddof=0), as the reference code's
# result parser reports them, so that our "± std" compares with the papers'.
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return mean, std


def _cell(values: Sequence[float], with_std: bool = True) -> str:
    if not values:
        return "–"
    mean, std = _mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if with_std and len(values) > 1 else f"{mean:.2f}"


def _hm_cell(group: Sequence[dict[str, Any]], prefix: str = "") -> str:
    """HM of the mean base and mean novel accuracy (as the field computes it), ± the spread of per-seed HMs."""
    base = statistics.fmean(r[f"{prefix}base"] for r in group)
    novel = statistics.fmean(r[f"{prefix}novel"] for r in group)
    per_seed = [r[f"{prefix}hm"] for r in group]
    spread = f" ± {statistics.pstdev(per_seed):.2f}" if len(per_seed) > 1 else ""
    return f"{_hm(base, novel):.2f}{spread}"


def _hm(base: float, novel: float) -> float:
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def _ordered(names: Iterable[str]) -> list[str]:
    order = list(METHOD_NAMES)
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda name: (order.index(name) if name in order else len(order), name))


def method_label(name: str) -> str:
    """The display name of a method (`"maple"` -> `"MaPLe"`)."""
    return METHOD_NAMES.get(name, name)


def _group(records: Iterable[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[tuple(record.get(key) for key in keys)].append(record)
    return groups


def base_to_novel_summary(records: Iterable[dict[str, Any]], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Per method, the field's average over datasets: mean base and novel, and HM of the two means.

    Args:
        records: base-to-novel records.
        prefix (`str`, defaults to `""`): `"open_world_"` summarises the open-world numbers instead.

    Returns:
        `dict` method -> `{"base", "novel", "hm"}` (means over datasets of the per-dataset means over seeds), plus
        per-seed lists `"base_seeds"`, `"novel_seeds"`, `"hm_seeds"` for a spread, and `"datasets"`.
    """
    selected = [r for r in records if r.get("protocol") == "base_to_novel" and f"{prefix}base" in r]
    summary = {}
    for (method,), rows in _group(selected, "method").items():
        by_dataset = _group(rows, "dataset")
        base = statistics.fmean(statistics.fmean(r[f"{prefix}base"] for r in group) for group in by_dataset.values())
        novel = statistics.fmean(statistics.fmean(r[f"{prefix}novel"] for r in group) for group in by_dataset.values())
        seeds = sorted({r["seed"] for r in rows})
        per_seed = defaultdict(list)
        for seed in seeds:
            seed_rows = [r for r in rows if r["seed"] == seed]
            if len({r["dataset"] for r in seed_rows}) != len(by_dataset):
                continue  # a seed missing on some dataset cannot give a comparable average
            b = statistics.fmean(r[f"{prefix}base"] for r in seed_rows)
            n = statistics.fmean(r[f"{prefix}novel"] for r in seed_rows)
            per_seed["base_seeds"].append(b)
            per_seed["novel_seeds"].append(n)
            per_seed["hm_seeds"].append(_hm(b, n))
        summary[method] = {"base": base, "novel": novel, "hm": _hm(base, novel), "datasets": sorted(by_dataset)}
        summary[method].update(per_seed)
    return summary


# -- tables -----------------------------------------------------------------------------------------------------


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _params(rows: Sequence[dict[str, Any]]) -> str:
    counts = {r.get("trainable_params") for r in rows if r.get("trainable_params") is not None}
    return ", ".join(f"{count:,}" for count in sorted(counts)) if counts else "–"


def _train_time(rows: Sequence[dict[str, Any]]) -> str:
    times = [r["train_time_s"] for r in rows if r.get("train_time_s")]
    return f"{statistics.fmean(times):.1f}" if times else "–"


def _by_shots(records: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Records split by their number of shots (never averaged together), with a title suffix when several."""
    shots = sorted({r.get("shots") for r in records}, key=lambda k: (k is None, k))
    if len(shots) <= 1:
        return [("", list(records))]
    return [(f", {k} shots", [r for r in records if r.get("shots") == k]) for k in shots]


def render_base_to_novel(records: Iterable[dict[str, Any]], prefix: str = "") -> str:
    """The base-to-novel tables, one set per number of shots (see `render_base_to_novel_one`)."""
    records = [r for r in records if r.get("protocol") == "base_to_novel" and f"{prefix}base" in r]
    return "\n".join(render_base_to_novel_one(group, prefix, suffix) for suffix, group in _by_shots(records))


def render_base_to_novel_one(records: Iterable[dict[str, Any]], prefix: str = "", suffix: str = "") -> str:
    """The base-to-novel table: the average over datasets (HM of the mean base and mean novel accuracy, as the
    field reports it) and one table per dataset, with mean ± std over seeds.

    Args:
        records: records of `ProtocolRunner.base_to_novel`.
        prefix (`str`, defaults to `""`): `"open_world_"` renders BMIP's open-world numbers (base and novel images
            classified among all classes).
    """
    records = [r for r in records if r.get("protocol") == "base_to_novel" and f"{prefix}base" in r]
    if not records:
        return ""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    summary = base_to_novel_summary(records, prefix)
    by_method = _group(records, "method")
    title = "Open-world" if prefix else "Base-to-novel"
    average_rows = []
    for method in _ordered(summary):
        item = summary[method]
        rows = by_method[(method,)]
        spread = ""
        if len(item.get("hm_seeds", [])) > 1:
            spread = f" ± {statistics.pstdev(item['hm_seeds']):.2f}"
        label = method_label(method)
        if len(item["datasets"]) < len(datasets):  # an average over fewer datasets is not comparable: say so
            label += f" ({len(item['datasets'])} of {len(datasets)} datasets)"
        row = [label, f"{item['base']:.2f}", f"{item['novel']:.2f}", f"{item['hm']:.2f}{spread}"]
        if prefix:
            alls = [statistics.fmean(r[f"{prefix}all"] for r in g) for g in _group(rows, "dataset").values()]
            row.append(f"{statistics.fmean(alls):.2f}")
        row += [_params(rows), _train_time(rows)]
        average_rows.append(row)
    header = ["Method", "Base", "Novel", "HM"] + (["All"] if prefix else []) + ["Params", "Train s/run"]
    sections = [f"### {title}: average over {len(datasets)} dataset(s){suffix}", "", _markdown(header, average_rows)]
    for dataset in datasets:
        rows = []
        for method in _ordered(r["method"] for r in records if r["dataset"] == dataset):
            group = [r for r in records if r["dataset"] == dataset and r["method"] == method]
            row = [method_label(method)] + [_cell([r[f"{prefix}{key}"] for r in group]) for key in ("base", "novel")]
            row.append(_hm_cell(group, prefix))
            if prefix:
                row.append(_cell([r[f"{prefix}all"] for r in group]))
            rows.append(row)
        seeds = sorted({r["seed"] for r in records if r["dataset"] == dataset})
        header = ["Method", "Base", "Novel", "HM"] + (["All"] if prefix else [])
        seeds_text = ", ".join(map(str, seeds))
        sections += ["", f"#### {dataset} (seeds {seeds_text}){suffix}", "", _markdown(header, rows)]
    return "\n".join(sections) + "\n"


def render_few_shot(records: Iterable[dict[str, Any]]) -> str:
    """Accuracy against shots (mean ± std over seeds), one table per dataset."""
    records = [r for r in records if r.get("protocol") == "few_shot"]
    sections = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows_of = [r for r in records if r["dataset"] == dataset]
        shots = sorted({r["shots"] for r in rows_of})
        rows = []
        for method in _ordered(r["method"] for r in rows_of):
            group = _group([r for r in rows_of if r["method"] == method], "shots")
            rows.append([method_label(method)] + [_cell([r["accuracy"] for r in group.get((k,), [])]) for k in shots])
        header = ["Method"] + [f"{k} shot" + ("s" if k != 1 else "") for k in shots]
        sections += [f"### Few-shot: {dataset}", "", _markdown(header, rows), ""]
    return "\n".join(sections)


def render_transfer(records: Iterable[dict[str, Any]], protocol: str = "cross_dataset") -> str:
    """Cross-dataset or domain-generalisation table: source accuracy, each target, and the targets' average."""
    records = [r for r in records if r.get("protocol") == protocol]
    title = "Cross-dataset transfer" if protocol == "cross_dataset" else "Domain generalisation"
    sections = []
    for suffix, group_of_shots in _by_shots(records):
        for (source,), rows_of in _group(group_of_shots, "source").items():
            targets = [d for d in dict.fromkeys(r["dataset"] for r in rows_of) if d != source]
            rows = []
            for method in _ordered(r["method"] for r in rows_of):
                group = _group([r for r in rows_of if r["method"] == method], "dataset")
                cells = [_cell([r["accuracy"] for r in group.get((d,), [])]) for d in [source, *targets]]
                means = [statistics.fmean(r["accuracy"] for r in group[(d,)]) for d in targets if (d,) in group]
                average = f"{statistics.fmean(means):.2f}" if means else "–"
                rows.append([method_label(method), *cells, average])
            header = ["Method", f"{source} (source)", *targets, "Average"]
            sections += [f"### {title} from {source}{suffix}", "", _markdown(header, rows), ""]
    return "\n".join(sections)


def render_tables(records: Sequence[dict[str, Any]]) -> str:
    """Every table the records allow, in the order papers present them."""
    parts = [
        render_base_to_novel(records),
        render_base_to_novel(records, prefix="open_world_"),
        render_few_shot(records),
        render_transfer(records, "cross_dataset"),
        render_transfer(records, "domain_generalisation"),
    ]
    return "\n".join(part for part in parts if part.strip())


# -- plot -------------------------------------------------------------------------------------------------------


def plot_base_to_novel_svg(records: Iterable[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """A grouped bar chart (base, novel, HM per method, averaged over datasets) as a dependency-free SVG file.

    Args:
        records: base-to-novel records.
        path (`str` or `os.PathLike`): the `.svg` file to write.
        title (`str`, *optional*): a title above the chart.
    """
    summary = base_to_novel_summary(records)
    if not summary:
        raise ValueError("No base-to-novel records to plot.")
    methods = _ordered(summary)
    series = (("base", "Base", "#4c72b0"), ("novel", "Novel", "#dd8452"), ("hm", "HM", "#55a868"))
    bar, gap, left, top, height = 14, 18, 50, 40, 260
    group_width = len(series) * bar + gap
    width = left + len(methods) * group_width + 20
    total_height = top + height + 90
    high = max(10.0, math.ceil(max(summary[m][k] for m in methods for k, _, _ in series) / 10) * 10)

    def y(value: float) -> float:
        return top + height * (1 - value / high)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{total_height}" fill="white"/>',
    ]
    if title:
        parts.append(f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{_escape(title)}</text>')
    for tick in range(0, int(high) + 1, 10):
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>')
    for index, method in enumerate(methods):
        x0 = left + index * group_width + gap / 2
        for offset, (key, _, colour) in enumerate(series):
            value = summary[method][key]
            x = x0 + offset * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{y(value):.1f}" width="{bar - 1}" height="{top + height - y(value):.1f}" '
                f'fill="{colour}"><title>{_escape(method_label(method))} {key}: {value:.2f}</title></rect>'
            )
        label_x = x0 + len(series) * bar / 2
        parts.append(
            f'<text x="{label_x:.1f}" y="{top + height + 14}" text-anchor="end" '
            f'transform="rotate(-40 {label_x:.1f} {top + height + 14})">{_escape(method_label(method))}</text>'
        )
    for offset, (_, label, colour) in enumerate(series):
        x = left + offset * 70
        parts.append(f'<rect x="{x}" y="{total_height - 18}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{total_height - 9}">{label}</text>')
    parts.append(
        f'<text x="14" y="{top + height / 2}" transform="rotate(-90 14 {top + height / 2})">accuracy %</text>'
    )
    parts.append("</svg>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path, "\n".join(parts) + "\n")
    return path


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = [
    "save_results",
    "load_results",
    "base_to_novel_summary",
    "render_base_to_novel",
    "render_base_to_novel_one",
    "render_few_shot",
    "render_transfer",
    "render_tables",
    "plot_base_to_novel_svg",
    "method_label",
]
