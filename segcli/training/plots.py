"""curves.png: loss, pixel accuracy and mIoU per epoch, train and val."""

from __future__ import annotations

from pathlib import Path

from segcli.files import atomic_path


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(row["epoch"]) + 1 for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(axes, ("loss", "pixel_accuracy", "miou"), ("loss", "pixel accuracy", "mIoU")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [number(row.get(prefix + key)) for row in history]
            if any(v == v for v in values):  # CSVLogger writes "NA" for val figures when there is no val data
                ax.plot(epochs, values, style, label=("val" if prefix else "train"))
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
