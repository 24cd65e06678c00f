"""The studies' plots, drawn where matplotlib is installed (pip install -e .[plot]); without it, none is.

    dose_response_plot   the sweep: held-out perplexity against alpha (results/study/dose_response.png)
    gain_plot            the retrain study: the share of fine-tuning's gain each arm kept (gain_kept.png)
    curves_plot          val loss against training time, one curve per run, with the time-to-gain thresholds
"""

from __future__ import annotations

import math
from pathlib import Path


def band_label(name: str, loss: dict) -> str:
    """A reference's legend entry: an interval only where there are seeds to make one."""
    return f"{name} (one run)" if loss["half_width"] is None else f"{name} (95% CI over {loss['n']} seeds)"


def dose_response_plot(points: list[tuple[float, dict]], arms: dict[str, dict], results_dir: Path) -> Path | None:
    """The sweep's held-out perplexity against alpha (`points`: (alpha, its arm's loss), mean and 95% CI over
    seeds); the real subset and the full-train arm of `arms` as bands over their seeds, the teacher (one run) as
    a line. Written only where matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if points:
        x = [p[0] for p in points]
        y = [math.exp(p[1]["mean"]) for p in points]
        lo = [y_ - math.exp(p[1]["mean"] - (p[1]["half_width"] or 0)) for y_, p in zip(y, points)]
        hi = [math.exp(p[1]["mean"] + (p[1]["half_width"] or 0)) - y_ for y_, p in zip(y, points)]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=4, label="synthetic set, weights p^alpha (95% CI over seeds)")
    for name, color in (("subset", "tab:green"), ("full-train", "tab:purple"), ("teacher", "tab:red")):
        loss = arms.get(name, {}).get("loss")
        if loss:
            if loss["half_width"] is not None:
                hw = loss["half_width"]
                ax.axhspan(math.exp(loss["mean"] - hw), math.exp(loss["mean"] + hw), color=color, alpha=0.2)
            ax.axhline(math.exp(loss["mean"]), color=color, label=band_label(name, loss))
    ax.set(xlabel="alpha (1 ordinary sampling, 0 uniform over the plausible set, < 0 inverted)",
           ylabel="held-out test perplexity", title="Retraining on sets drawn with weight p^alpha")
    ax.invert_xaxis()  # from ordinary sampling on the left to the most inverted on the right
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = results_dir / "dose_response.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def gain_plot(arms: dict[str, dict], results: Path) -> Path | None:
    """The share of fine-tuning's gain each arm kept (mean and 95% CI over seeds), one row per arm: 0 is the
    base, 1 the teacher. Written only where matplotlib is installed (pip install -e .[plot])."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [(name, row["gain_kept"]) for name, row in arms.items() if row.get("gain_kept")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.4))
    y = list(range(len(rows)))[::-1]
    means = [k["mean"] for _, k in rows]
    widths = [k["half_width"] or 0.0 for _, k in rows]
    ax.errorbar(means, y, xerr=widths, fmt="o", capsize=3, color="tab:blue")
    for x, label, color in ((0.0, "base", "tab:gray"), (1.0, "teacher", "tab:red")):
        ax.axvline(x, color=color, linestyle="--", linewidth=1)
        ax.text(x, len(rows) - 0.4, label, color=color, ha="center", fontsize=8)
    ax.set_yticks(y, [name for name, _ in rows], fontsize=8)
    ax.set(xlabel="share of the fine-tuning gain kept on held-out text (95% CI over seeds)",
           title="The base continued on each set (and the KD students)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = results / "gain_kept.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves_plot(curves: dict[str, list[dict]], path: Path, thresholds: dict[str, float]) -> Path | str:
    """Val loss against elapsed seconds, one line per run ({name: studies.time_to_gain.val_curve(...)}), each
    evaluation a marker; `thresholds` ({label: val loss}, e.g. "50% of the gain": start - 0.5 gain) as dashed
    horizontal lines. To count a set's generation time, add it to its curve's elapsed_s before passing it.
    Returns the path written, or, where matplotlib is not installed, a note saying no plot was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no plot at {path}: matplotlib is not installed (pip install -e .[plot])"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.plot([p["elapsed_s"] for p in curve], [p["val_loss"] for p in curve], marker="o", markersize=3,
                label=name)
    for label, loss in thresholds.items():
        ax.axhline(loss, color="tab:gray", linestyle="--", linewidth=1)
        ax.text(ax.get_xlim()[1], loss, f" {label}", color="tab:gray", va="center", fontsize=8)
    ax.set(xlabel="elapsed seconds (at each evaluation)", ylabel="val loss", title="Time to gain")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
