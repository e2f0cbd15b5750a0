"""PNG figures of reconstructions: image, reference and error map side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrecon.data.atomic import atomic_file

SOFT_TISSUE_WINDOW = (-160.0, 240.0)  # HU, abdomen window (centre 40, width 400)


@dataclass(frozen=True)
class Panel:
    """One image of a figure; ``window`` is the (low, high) display range."""

    title: str
    image: np.ndarray
    window: tuple[float, float] | None = None
    cmap: str = "gray"


def display_window(image: np.ndarray, units: str) -> tuple[float, float]:
    """The soft-tissue window for HU, else the 0.5 to 99.5 percentile range."""
    if units == "HU":
        return SOFT_TISSUE_WINDOW
    low, high = np.percentile(image, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def comparison_panels(image: np.ndarray, title: str, units: str,
                      reference: np.ndarray | None = None) -> list[Panel]:
    """Reconstruction, and with a reference also the reference and the error map."""
    window = display_window(reference if reference is not None else image, units)
    panels = [Panel(title, image, window)]
    if reference is not None:
        error = image - reference
        bound = float(np.percentile(np.abs(error), 99.5)) or 1.0
        panels += [Panel("reference", reference, window),
                   Panel(f"error ({units})" if units else "error", error, (-bound, bound),
                         "RdBu_r")]
    return panels


def save_figure(path: str | os.PathLike[str], panels: list[Panel], suptitle: str = "") -> Path:
    """Write the panels in a row as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        low, high = panel.window or (None, None)
        shown = ax.imshow(panel.image, cmap=panel.cmap, vmin=low, vmax=high)
        ax.set_title(panel.title, fontsize=10)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
