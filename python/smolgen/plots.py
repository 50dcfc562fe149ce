"""Pictures of what happened inside: the next-token distribution and where the time went.

Needs matplotlib (``pip install 'smolgen[plot]'``), imported only when a plot is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import _core


def pyplot(path: str | os.PathLike[str] | None) -> Any:
    """matplotlib.pyplot, headless when the figure goes to a file."""
    try:
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "plotting needs matplotlib: pip install 'smolgen[plot]' (or pip install matplotlib)"
        ) from exc
    return plt


def plot_distribution(
    pieces: list[str],
    before: np.ndarray,
    after: np.ndarray,
    title: str,
    after_label: str,
    path: str | Path | None = None,
) -> Any:
    """Side-by-side bars of the same candidates' probabilities before and after sampling's
    transforms (temperature, top-k, top-p, min-p)."""
    plt = pyplot(path)
    x = np.arange(len(pieces))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(pieces) + 2), 4.5))
    ax.bar(x - 0.2, before, width=0.4, label="model (T=1)")
    ax.bar(x + 0.2, after, width=0.4, label=after_label)
    ax.set_xticks(x, [repr(p) for p in pieces], rotation=60, ha="right")
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_timeline(
    prefill_s: float,
    decode_steps_s: list[float],
    prompt_tokens: int,
    path: str | Path | None = None,
) -> Any:
    """Where one generation's time went: the prefill pass then every decode step on a time line,
    and each decode step's latency with its median and 95th percentile."""
    plt = pyplot(path)
    fig, (line, steps) = plt.subplots(2, 1, figsize=(9, 5), height_ratios=[1, 2])
    starts = prefill_s + np.concatenate([[0.0], np.cumsum(decode_steps_s)[:-1]])
    line.broken_barh([(0.0, prefill_s)], (0, 1), color="tab:orange")
    line.broken_barh(list(zip(starts, decode_steps_s, strict=True)), (0, 1),
                     color="tab:blue", edgecolor="white", linewidth=0.3)  # fmt: skip
    line.set_yticks([])
    line.set_xlabel("seconds since the request")
    line.set_title(
        f"prefill: {prompt_tokens} tokens in {prefill_s * 1000:.0f} ms (orange); "
        f"decode: {len(decode_steps_s)} steps (blue)"
    )
    ms = np.asarray(decode_steps_s) * 1000
    steps.plot(np.arange(1, len(ms) + 1), ms, marker=".", linewidth=0.8)
    if len(ms):
        for q, style in ((50, "--"), (95, ":")):
            # The one definition (nearest rank) that Timings.decode_p95_s and bench use.
            value = _core.percentile(ms.tolist(), q)
            steps.axhline(value, linestyle=style, color="grey", label=f"p{q} {value:.1f} ms")
        steps.legend()
    steps.set_xlabel("decode step")
    steps.set_ylabel("ms")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
