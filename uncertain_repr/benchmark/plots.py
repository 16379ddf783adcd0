"""PNG plots of a benchmark run (optional: needs matplotlib, drawn with the Agg backend).

Risk-coverage of the 1-NN retrieval error, uncertainty histograms (ID vs OOD with an upstream
set), uncertainty of crops vs the kept crop fraction, and R-AUROC per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..metrics import nearest_neighbor_correct, risk_coverage_curve
from .outputs import DatasetOutputs, atomic_path

CROP_BINS = 10  # equal-count bins of the crop fraction
DPI = 80


def require_matplotlib():
    """``matplotlib.pyplot`` on the Agg backend; a clear ``ImportError`` if matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plots need matplotlib, which is not installed: pip install 'uncertain-repr[plot]'"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass
class PlotData:
    """What the plots need from one dataset (no embeddings): ``[M, N]`` uncertainties, ``[N]`` errors."""

    name: str
    role: str
    methods: Sequence[str]
    uncertainties: np.ndarray
    retrieval_errors: np.ndarray
    uncertainties_cropped: Optional[np.ndarray] = None
    crop_fractions: Optional[np.ndarray] = None

    @classmethod
    def from_outputs(cls, outputs: DatasetOutputs, *, role: str) -> "PlotData":
        correct = nearest_neighbor_correct(outputs.embeddings, outputs.labels).numpy()
        return cls(outputs.name, role, outputs.methods, outputs.uncertainties, ~correct,
                   outputs.uncertainties_cropped, outputs.crop_fractions)


def _grid(plt, rows: int, cols: int, title: str):
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.8, 3.2 * cols), 2.6 * rows + 0.3), squeeze=False, dpi=DPI)
    fig.suptitle(title, fontsize=10)
    return fig, axes


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def write_plots(result: Dict[str, Any], data: Sequence[PlotData], folder: Path) -> List[Path]:
    """Draw every plot into ``folder`` (PNG, atomic writes); returns the written paths."""
    plt = require_matplotlib()
    folder = Path(folder)
    methods = list(data[0].methods)
    upstream = next((d for d in data if d.role == "upstream"), None)
    written: List[Path] = []
    try:
        # Risk-coverage: retrieval error of the kept samples vs the fraction rejected as most uncertain.
        fig, axes = _grid(plt, 1, len(data), "retrieval error after rejecting the most uncertain")
        for ax, d in zip(axes[0], data):
            for row, method in enumerate(methods):
                coverage, risk = risk_coverage_curve(d.uncertainties[row], d.retrieval_errors)
                ax.plot(1.0 - coverage.numpy(), risk.numpy(), label=method, lw=1.2)
            ax.axhline(d.retrieval_errors.mean(), color="grey", lw=0.8, ls=":")
            ax.set(title=d.name, xlabel="rejected fraction", ylabel="retrieval error", xlim=(0, 1))
        axes[0][0].legend(fontsize=7)
        written.append(_save(fig, folder / "risk_coverage.png"))
        plt.close(fig)

        # Histograms, one row per method; the upstream (ID) distribution overlaid on each OOD set.
        fig, axes = _grid(plt, len(methods), len(data), "uncertainty histograms")
        for col, d in enumerate(data):
            for row, method in enumerate(methods):
                ax = axes[row][col]
                values = [d.uncertainties[row]]
                if upstream is not None and d is not upstream:
                    values.append(upstream.uncertainties[row])
                bins = np.histogram_bin_edges(np.concatenate(values), bins=40)
                ax.hist(d.uncertainties[row], bins=bins, density=True, alpha=0.6,
                        label=f"{d.name} ({'ID' if d is upstream else 'OOD' if upstream else 'all'})")
                if len(values) > 1:
                    ax.hist(upstream.uncertainties[row], bins=bins, density=True, alpha=0.5, label=f"{upstream.name} (ID)")
                ax.set(title=f"{d.name} [{method}]", xlabel="uncertainty", ylabel="density")
                ax.legend(fontsize=6)
        written.append(_save(fig, folder / "uncertainty_histograms.png"))
        plt.close(fig)

        cropped = [d for d in data if d.uncertainties_cropped is not None]
        if cropped:
            fig, axes = _grid(plt, len(methods), len(cropped), "uncertainty of center crops")
            for col, d in enumerate(cropped):
                edges = np.quantile(d.crop_fractions, np.linspace(0, 1, CROP_BINS + 1))
                bin_of = np.clip(np.searchsorted(edges, d.crop_fractions, side="right") - 1, 0, CROP_BINS - 1)
                centers = [d.crop_fractions[bin_of == b].mean() for b in range(CROP_BINS)]
                for row, method in enumerate(methods):
                    ax = axes[row][col]
                    q25, q50, q75 = np.array(
                        [np.quantile(d.uncertainties_cropped[row][bin_of == b], [0.25, 0.5, 0.75]) for b in range(CROP_BINS)]
                    ).T
                    ax.fill_between(centers, q25, q75, alpha=0.3, label="crop: 25-75%")
                    ax.plot(centers, q50, marker="o", ms=3, label="crop: median")
                    ax.axhline(np.median(d.uncertainties[row]), color="grey", ls=":", lw=0.8, label="full image: median")
                    ax.set(title=f"{d.name} [{method}]", xlabel="kept side fraction", ylabel="uncertainty")
                    ax.legend(fontsize=6)
            written.append(_save(fig, folder / "crop_uncertainty.png"))
            plt.close(fig)

        # R-AUROC per dataset, bars grouped by dataset, one bar per method.
        names = [d.name for d in data]
        fig, axes = _grid(plt, 1, 1, "R-AUROC (auroc_correct); 0.5 = uninformative")
        ax = axes[0][0]
        fig.set_size_inches(max(4.8, 1.1 * len(names) * max(1, len(methods)) ** 0.5 + 2), 3.0)
        width = 0.8 / len(methods)
        for row, method in enumerate(methods):
            heights = [result["metrics"][method].get(f"{n}_auroc_correct") for n in names]
            ax.bar(np.arange(len(names)) + (row - (len(methods) - 1) / 2) * width,
                   [np.nan if h is None else h for h in heights], width, label=method)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(np.arange(len(names)), names, fontsize=7)
        ax.set(ylabel="R-AUROC", ylim=(0.3, 1.0))
        ax.legend(fontsize=7)
        written.append(_save(fig, folder / "r_auroc.png"))
        plt.close(fig)
    finally:
        plt.close("all")
    return written
