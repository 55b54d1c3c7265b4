"""One look for every figure: a fixed colour and line style per rule, a sequential
colormap for stages, integer epoch ticks, captions in a file beside each figure.

Colours: the Okabe-Ito palette (Okabe & Ito 2008, "Color Universal Design"), safe
for the common colour-vision deficiencies; each rule also has its own line style, so
figures read in greyscale too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bp_alternatives.atomic import atomic_path, write_atomic

# Okabe & Ito (2008): the eight colours of "Color Universal Design"
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}
RULE_STYLE = {
    "bp": {"color": OKABE_ITO["black"], "linestyle": "-", "marker": "o"},
    "manual_bp": {
        "color": OKABE_ITO["sky blue"],
        "linestyle": (0, (1, 1)),
        "marker": "x",
    },
    "fa": {"color": OKABE_ITO["orange"], "linestyle": "--", "marker": "s"},
    "dfa": {"color": OKABE_ITO["bluish green"], "linestyle": "-.", "marker": "^"},
    "ff": {
        "color": OKABE_ITO["vermillion"],
        "linestyle": (0, (5, 1, 1, 1, 1, 1)),
        "marker": "D",
    },
    "sg": {"color": OKABE_ITO["blue"], "linestyle": (0, (3, 1, 1, 1)), "marker": "v"},
    "ep": {
        "color": OKABE_ITO["reddish purple"],
        "linestyle": (0, (5, 2)),
        "marker": "P",
    },
    "pc": {"color": OKABE_ITO["yellow"], "linestyle": (0, (1, 2)), "marker": "*"},
}
_SPARE = ["#999999", "#666666"]  # greys: rules outside the table
STAGE_CMAP = "viridis"  # sequential: stage 1 ... stage L in order
RULE_ORDER = tuple(RULE_STYLE)
RC = {
    "figure.dpi": 120,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.6,
}


def rule_style(rule: str) -> dict:
    """Colour, line style and marker of ``rule`` (``bp (remat=true)`` -> bp's); a
    rule outside the table gets a spare colour, always the same for that name."""
    base = rule.split(" (")[0]
    if base in RULE_STYLE:
        return dict(RULE_STYLE[base])
    i = sum(map(ord, base)) % len(_SPARE)
    return {"color": _SPARE[i], "linestyle": ":", "marker": "h"}


def rule_key(rule: str) -> tuple[int, str]:
    """Sort key: the table's rule order, other rules after it."""
    base = rule.split(" (")[0]
    return (RULE_ORDER.index(base) if base in RULE_ORDER else len(RULE_ORDER), rule)


def stage_colors(n: int) -> list:
    """``n`` colours in stage order from the sequential :data:`STAGE_CMAP`."""
    import matplotlib

    cmap = matplotlib.colormaps[STAGE_CMAP]
    return [cmap(0.1 + 0.8 * i / max(n - 1, 1)) for i in range(n)]


def integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def pyplot():
    """matplotlib's pyplot on the Agg backend with :data:`RC` applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(RC)
    return plt


def save(
    fig,
    out_dir: str,
    name: str,
    caption: str | None = None,
    *,
    dpi: float | None = None,
    tight: bool = True,
) -> list[str]:
    """``<name>.png``, ``<name>.pdf`` and (``caption``) ``<name>.txt`` in ``out_dir``,
    each written to a temp file and renamed into place (``atomic.atomic_path``): a
    killed comparison never leaves half an image under the final name. ``dpi``:
    matplotlib's ``savefig.dpi`` unless given; ``tight``: crop to the drawn area."""
    os.makedirs(out_dir, exist_ok=True)
    paths: list[str] = []
    for ext in ("png", "pdf"):
        path = os.path.join(out_dir, f"{name}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None)
        paths.append(path)
    if caption is not None:
        paths.append(os.path.join(out_dir, f"{name}.txt"))
        write_atomic(paths[-1], caption.strip() + "\n")
    return paths


def panel_grid(plt, n: int, size: tuple[float, float], pad: float = 0.0, **kwargs):
    """(figure, its first ``n`` axes): up to 3 panels a row, each ``size`` (width,
    height) inches, ``pad`` inches more height; the grid's spare axes are hidden.
    ``kwargs`` go to ``plt.subplots`` (``sharey=True``, ...)."""
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(size[0] * ncols, size[1] * nrows + pad),
        squeeze=False,
        layout="constrained",
        **kwargs,
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def legend_below(fig, axes: Sequence, ncol: int | None = None) -> None:
    """One legend for the figure, below the panels, from the first axes' lines."""
    handles, labels = [], []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=ncol or min(len(labels), 6),
        )
