"""Results files (JSON, CSV, Markdown report) and the tables printed on the terminal."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .outputs import atomic_path, write_json

PathLike = Union[str, os.PathLike]

# The metrics shown in tables (all keys are in the JSON/CSV), in the original's key names.
HEADLINE = (
    "r1",
    "auroc_correct",
    "croppedHasBiggerUnc",
    "rcorr_crop_unc",
    "rcorr_entropy",
    "auroc_ood",
    "auroc_correct_mixed",
    "top1",
    "auroc_classification",
    "avg_unc",
)
AVERAGE = "avg_downstream"


def load_results(path: PathLike) -> Dict[str, Any]:
    """Read a ``results.json`` written by :func:`uncertain_repr.benchmark.run` (or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark results at {path}")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(result, dict) or not {"meta", "datasets", "metrics"} <= set(result):
        raise ValueError(f"{path} is not a benchmark results file (needs 'meta', 'datasets' and 'metrics')")
    return result


def split_key(key: str, datasets: Sequence[str]) -> Tuple[str, str]:
    """``"repr/cub_auroc_correct"`` -> ``("repr/cub", "auroc_correct")`` given the run's dataset names."""
    for prefix in sorted([*datasets, AVERAGE], key=len, reverse=True):
        if key.startswith(prefix + "_"):
            return prefix, key[len(prefix) + 1 :]
    raise ValueError(f"metric key {key!r} does not start with one of the datasets {list(datasets)}")


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def format_table(result: Dict[str, Any], method: Optional[str] = None) -> str:
    """A Markdown table (readable as plain text): one row per dataset plus the downstream average.

    Columns are the headline metrics that at least one dataset has; ``n/a`` = not defined there.
    """
    methods = [method] if method is not None else list(result["metrics"])
    tables = []
    for name in methods:
        flat = result["metrics"][name]
        rows_of: Dict[str, Dict[str, Optional[float]]] = {}
        for key, value in flat.items():
            dataset, metric = split_key(key, result["datasets"])
            rows_of.setdefault(dataset, {})[metric] = value
        columns = [m for m in HEADLINE if any(m in row for row in rows_of.values())]
        order = [d for d in [*result["datasets"], AVERAGE] if d in rows_of]
        rows = [[d + (" (upstream)" if d == result.get("upstream") else "")]
                + [_fmt(rows_of[d][c]) if c in rows_of[d] else "" for c in columns] for d in order]
        title = f"{result['meta'].get('model', '')} / method {name}"
        tables.append(f"{title}\n\n{_markdown(['dataset', *columns], rows)}")
    return "\n\n".join(tables)


def compare_table(results: Sequence[Dict[str, Any]], labels: Optional[Sequence[str]] = None) -> str:
    """One Markdown table with the runs (every method of every result) side by side.

    Rows are ``<dataset>_<metric>`` keys of the headline metrics (averages first); a run that
    lacks a key shows an empty cell.
    """
    if not results:
        raise ValueError("compare needs at least one result")
    labels = list(labels) if labels is not None else [str(i) for i in range(len(results))]
    if len(labels) != len(results):
        raise ValueError(f"got {len(labels)} labels for {len(results)} results")
    columns: List[Tuple[str, Dict[str, Optional[float]]]] = []
    keys: Dict[str, Tuple[int, int, int]] = {}
    for label, result in zip(labels, results):
        datasets = result["datasets"]
        for method, flat in result["metrics"].items():
            columns.append((f"{label} [{method}]", flat))
            for key in flat:
                dataset, metric = split_key(key, datasets)
                if metric in HEADLINE:
                    rank = (0 if dataset == AVERAGE else 1, HEADLINE.index(metric), len(keys))
                    keys.setdefault(key, rank)
    ordered = sorted(keys, key=keys.get)
    rows = [[key] + [_fmt(flat[key]) if key in flat else "" for _, flat in columns] for key in ordered]
    return _markdown(["metric", *[c for c, _ in columns]], rows)


def to_csv(result: Dict[str, Any]) -> str:
    """One row per method: ``model``, ``method`` and every ``<dataset>_<metric>`` key (empty = undefined)."""
    keys = list(dict.fromkeys(k for flat in result["metrics"].values() for k in flat))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "method", *keys])
    for method, flat in result["metrics"].items():
        writer.writerow([result["meta"].get("model", ""), method,
                         *["" if flat.get(k) is None else repr(flat[k]) for k in keys]])
    return buffer.getvalue()


def _report(result: Dict[str, Any], images: Sequence[Path], folder: Path) -> str:
    meta = result["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    lines = [
        "# URL benchmark results",
        "",
        f"- model: {meta.get('model')}",
        f"- methods: {', '.join(result['metrics'])}",
        f"- weights sha256: `{meta.get('weights_sha256')}`",
        f"- datasets: " + ", ".join(
            f"{d['name']} ({d['role']}, {d['num_samples']} of {d['dataset_size']} images)" for d in meta["data"]["datasets"]
        ),
        f"- seed {meta.get('seed')}, preprocessing: {'legacy' if meta.get('legacy_preprocessing') else 'model'}, "
        f"{meta.get('world_size')} process(es) on {meta.get('device')}, {meta.get('elapsed_s')} s, {meta.get('date')}",
        f"- versions: {versions}",
    ]
    if meta.get("command"):
        lines.append(f"- command: `{meta['command']}`")
    if meta.get("recomputed_from"):
        lines.append(f"- recomputed from saved outputs in `{meta['recomputed_from']}`")
    lines += ["", format_table(result), ""]
    for image in images:
        lines += [f"![{image.stem}]({image.relative_to(folder).as_posix()})", ""]
    return "\n".join(lines)


def write_results(result: Dict[str, Any], folder: PathLike, *, plot_data=None) -> Dict[str, Path]:
    """Write ``results.json``, ``results.csv``, ``report.md`` (and ``plots/*.png``) into ``folder``, atomically."""
    folder = Path(folder)
    images: List[Path] = []
    if plot_data is not None:
        from .plots import write_plots

        images = write_plots(result, plot_data, folder / "plots")
    paths = {"json": write_json(result, folder / "results.json")}
    for kind, name, text in (("csv", "results.csv", to_csv(result)), ("report", "report.md", _report(result, images, folder))):
        with atomic_path(folder / name) as tmp:
            tmp.write_text(text)
        paths[kind] = folder / name
    return paths
