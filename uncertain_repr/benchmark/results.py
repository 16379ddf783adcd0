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


def _rows_by_dataset(flat: Dict[str, Optional[float]], datasets: Sequence[str]) -> Dict[str, Dict[str, Optional[float]]]:
    rows: Dict[str, Dict[str, Optional[float]]] = {}
    for key, value in flat.items():
        dataset, metric = split_key(key, datasets)
        rows.setdefault(dataset, {})[metric] = value
    return rows


def scored_rows(result: Dict[str, Any], method: Optional[str] = None) -> List[Tuple[str, str, Dict[str, Optional[float]]]]:
    """``(label, name, flat metrics)`` of the methods (or only ``method``), then of the controls (``"random (control)"``)."""
    methods = [method] if method is not None else list(result["metrics"])
    rows = [(m, m, result["metrics"][m]) for m in methods]
    return rows + [(f"{c} (control)", c, flat) for c, flat in result.get("controls", {}).items()]


def _cell(value: Optional[float], interval: Optional[Sequence[Optional[float]]]) -> str:
    if interval is None or value is None:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(interval[0])}, {_fmt(interval[1])}]"


def _dataset_title(result: Dict[str, Any], dataset: str) -> str:
    if dataset == AVERAGE:
        return f"{AVERAGE} (mean over the downstream datasets)"
    info = {d["name"]: d for d in result["meta"].get("data", {}).get("datasets", [])}.get(dataset, {})
    details = [info.get("role")] if info.get("role") == "upstream" else []
    if info.get("split"):
        details.append(f"{info['split']} split")
    if "num_samples" in info:
        details.append(f"{info['num_samples']} images")
    if info.get("singleton_queries") is not None:
        details.append(f"{info['singleton_queries']} singleton queries")
    return dataset + (f" ({', '.join(details)})" if details else "")


def format_table(result: Dict[str, Any], method: Optional[str] = None) -> str:
    """Markdown tables (readable as plain text): one per dataset plus one for the downstream average.

    Rows are the methods (or only ``method``) and the controls (``random``, ``sharpness``: a
    method should beat them); columns the headline metrics that the dataset has (``n/a`` = not
    defined). With a bootstrap, R@1 and the AUROC-type cells show their interval: ``0.6123 [0.6010, 0.6240]``.
    """
    rows_of = [(label, name, _rows_by_dataset(flat, result["datasets"])) for label, name, flat in scored_rows(result, method)]
    intervals = result.get("bootstrap", {}).get("intervals", {})
    tables = [f"{result['meta'].get('model', '')}" + (f" ({_bootstrap_note(result)})" if intervals else "")]
    for dataset in [*result["datasets"], AVERAGE]:
        present = [(label, name, rows[dataset]) for label, name, rows in rows_of if dataset in rows]
        if not present:
            continue
        columns = [m for m in HEADLINE if any(m in row for _, _, row in present)]
        cells = [[label] + [_cell(row[c], intervals.get(name, {}).get(f"{dataset}_{c}")) if c in row else ""
                            for c in columns] for label, name, row in present]
        tables.append(f"{_dataset_title(result, dataset)}\n\n{_markdown(['method', *columns], cells)}")
    return "\n\n".join(tables)


def _bootstrap_note(result: Dict[str, Any]) -> str:
    b = result["bootstrap"]
    return f"{b['confidence']:.0%} bootstrap intervals over {b['n_resamples']} resamples of the samples, seed {b['seed']}"


def format_differences(result: Dict[str, Any]) -> str:
    """The paired bootstrap differences of a run as one Markdown table ('' without a bootstrap).

    One row per pair and key: ``A - B``, the difference, its interval and the p-value; an
    interval that excludes 0 means A and B rank the same way on (nearly) every resample.
    """
    differences = result.get("bootstrap", {}).get("differences", {})
    rows = [[pair, key, _fmt(d["difference"]), f"[{_fmt(d['low'])}, {_fmt(d['high'])}]",
             "n/a" if d["p_value"] is None else f"{d['p_value']:.3f}"]
            for pair, keys in differences.items() for key, d in keys.items()]
    if not rows:
        return ""
    header = ["A - B", "metric", "difference", "interval", "p"]
    return f"Paired differences ({_bootstrap_note(result)})\n\n{_markdown(header, rows)}"


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
        for method_label, _, flat in scored_rows(result):
            columns.append((f"{label} [{method_label}]", flat))
            for key in flat:
                dataset, metric = split_key(key, datasets)
                if metric in HEADLINE:
                    rank = (0 if dataset == AVERAGE else 1, HEADLINE.index(metric), len(keys))
                    keys.setdefault(key, rank)
    ordered = sorted(keys, key=keys.get)
    rows = [[key] + [_fmt(flat[key]) if key in flat else "" for _, flat in columns] for key in ordered]
    return _markdown(["metric", *[c for c, _ in columns]], rows)


def to_csv(result: Dict[str, Any]) -> str:
    """One row per method and control: ``model``, ``method``, ``kind`` (method/control) and every
    ``<dataset>_<metric>`` key (empty = undefined), each bootstrapped key followed by ``<key>_low``, ``<key>_high``."""
    rows = scored_rows(result)
    intervals = result.get("bootstrap", {}).get("intervals", {})
    keys = list(dict.fromkeys(k for _, _, flat in rows for k in flat))
    bounded = {k for per_method in intervals.values() for k in per_method}
    columns = [c for k in keys for c in ((k, f"{k}_low", f"{k}_high") if k in bounded else (k,))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "method", "kind", *columns])
    for label, name, flat in rows:
        values = dict(flat)
        for key, (low, high) in intervals.get(name, {}).items():
            values[f"{key}_low"], values[f"{key}_high"] = low, high
        writer.writerow([result["meta"].get("model", ""), name, "method" if name in result["metrics"] else "control",
                         *["" if values.get(c) is None else repr(values[c]) for c in columns]])
    return buffer.getvalue()


def _report(result: Dict[str, Any], images: Sequence[Path], folder: Path) -> str:
    meta = result["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    lines = [
        "# URL benchmark results",
        "",
        f"- model: {meta.get('model')}",
        f"- methods: {', '.join(result['metrics'])}; controls: {', '.join(result.get('controls', {})) or 'none'}",
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
    differences = format_differences(result)
    if differences:
        lines += [differences, ""]
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
