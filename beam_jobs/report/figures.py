"""Figures of the EDA report, drawn from stats.json and a few sample patches.

Each function returns a matplotlib `Figure` made with the object API (no
pyplot, so no global figure state and no backend to choose: `png_bytes`
renders with Agg). Every figure has a title, axis labels where there are axes,
and a legend.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

CENTRE = (32, 64)  # rows and columns 32..63 of a 96x96 patch decide its label
CENTRE_COLOUR = "#00c8ff"
GROUP_COLOURS = {"negative": "#1f77b4", "positive": "#d62728", "test": "#7f7f7f"}
GROUP_TITLES = {
    "negative": "label 0 (no tumour in centre)",
    "positive": "label 1 (tumour in centre)",
    "test": "test (no label)",
}
GROUP_SHORT = {"negative": "label 0", "positive": "label 1", "test": "test"}
CHANNEL_NAMES = ("red", "green", "blue")
CHANNEL_COLOURS = ("#ff0000", "#00ff00", "#0000ff")  # pure channel colours
GALLERY_COLUMNS = 8  # flagged patches shown per flag


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    FigureCanvasAgg(fig)  # attaches an Agg canvas: no pyplot, no global backend
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _outline_centre(ax, size: int) -> None:
    """Draws the centre 32x32 square of a 96x96 patch, scaled to SIZE pixels."""
    scale = size / 96
    lo, hi = CENTRE[0] * scale - 0.5, CENTRE[1] * scale - 0.5
    ax.add_patch(Rectangle((lo, lo), hi - lo, hi - lo, fill=False, edgecolor=CENTRE_COLOUR, linewidth=1.5))


def sample_grid(examples: dict[str, list[tuple[str, np.ndarray]]], columns: int = 8) -> Figure:
    """One block of rows per label: each patch with its centre 32x32 outlined, titled by the start of its id.

    EXAMPLES maps a group name ('negative', 'positive') to [(id, pixels)].
    """
    groups = [g for g in ("negative", "positive") if examples.get(g)]
    rows_per_group = {g: -(-len(examples[g]) // columns) for g in groups}
    n_rows = max(1, sum(rows_per_group.values()))
    fig = Figure(figsize=(1.6 * columns, 2.0 * n_rows + 1.2))
    axes = fig.subplots(n_rows, columns, squeeze=False)
    row = 0
    for g in groups:
        for k, (id_, pixels) in enumerate(examples[g]):
            ax = axes[row + k // columns][k % columns]
            ax.imshow(pixels)
            _outline_centre(ax, pixels.shape[0])
            ax.set_title(f"{id_[:8]}", fontsize=8, color=GROUP_COLOURS[g])
        # Two short lines: one long rotated line ran past a one-row block and was cut off at the figure's edge.
        axes[row][0].set_ylabel(GROUP_TITLES[g].replace(" (", "\n("), fontsize=8, color=GROUP_COLOURS[g])
        row += rows_per_group[g]
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    fig.suptitle(
        "Sample patches by label\n(96x96 px; the label depends only on the outlined centre 32x32)", fontsize=11
    )
    fig.legend(
        handles=[
            Patch(facecolor="none", edgecolor=CENTRE_COLOUR, label="centre 32x32"),
            *[Patch(color=GROUP_COLOURS[g], label=GROUP_TITLES[g]) for g in groups],
        ],
        loc="lower center",
        ncol=1 + len(groups),
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1 - 0.45 / fig.get_figheight()))  # room for the two-line title
    return fig


def channel_split(id_: str, label: int, pixels: np.ndarray) -> Figure:
    """One patch and its red, green and blue channels, each with a colour bar of intensities."""
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 4)
    axes[0].imshow(pixels)
    _outline_centre(axes[0], pixels.shape[0])
    axes[0].set_title(f"RGB patch {id_[:8]} (label {label})")
    axes[0].legend(
        handles=[Patch(facecolor="none", edgecolor=CENTRE_COLOUR, label="centre 32x32")], loc="lower right", fontsize=8
    )
    for c, (ax, name) in enumerate(zip(axes[1:], CHANNEL_NAMES)):
        # Black to the pure colour: each panel shows what that channel alone contributes.
        cmap = LinearSegmentedColormap.from_list(f"black_{name}", ["black", CHANNEL_COLOURS[c]])
        im = ax.imshow(pixels[..., c], cmap=cmap, vmin=0, vmax=255)
        ax.set_title(f"{name} channel (mean {pixels[..., c].mean():.0f})")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(f"{name} intensity (0-255)")
    for ax in axes:
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    fig.suptitle("One patch split into its channels")
    fig.tight_layout()
    return fig


def rgb_histograms(stats: dict, groups=("negative", "positive", "test")) -> Figure:
    """The exact 256-bin histogram of each channel, one line per group, as a share of the group's pixels.

    Saturated pixels (0 and 255, e.g. glass or black borders) can be many times
    more frequent than any other value; the y axis is scaled to values 1..254
    and the end bins that go off scale are written in each panel.
    """
    fig = Figure(figsize=(15, 4.4))
    axes = fig.subplots(1, 3, sharey=True)
    values = np.arange(256)
    shares = {
        g: np.asarray(stats["groups"][g]["histogram"], dtype=np.float64) / stats["groups"][g]["pixels"]
        for g in groups
        if stats["groups"][g]["pixels"]
    }
    top = 1.1 * max((sh[:, 1:255].max() for sh in shares.values()), default=1.0) or 1.0
    for c, (ax, name) in enumerate(zip(axes, CHANNEL_NAMES)):
        off_scale = []
        for g, sh in shares.items():
            ax.plot(
                values,
                sh[c],
                color=GROUP_COLOURS[g],
                linewidth=1.2,
                linestyle="--" if g == "test" else "-",
                label=f"{GROUP_TITLES[g]}: {stats['groups'][g]['patches']:,} patches",
            )
            off_scale += [f"{g} at {v}: {sh[c, v]:.1%}" for v in (0, 255) if sh[c, v] > top]
        if off_scale:
            ax.text(
                0.98,
                0.97,
                "off scale:\n" + "\n".join(off_scale),
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
            )
        ax.set_title(f"{name} channel")
        ax.set_xlabel(f"{name} intensity (0-255)")
        ax.set_xlim(0, 255)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the group's pixels")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("RGB intensity histograms by label (every pixel of every valid patch)")
    fig.tight_layout()
    return fig


def label_distribution(stats: dict) -> Figure:
    """Valid patches per label (and test), counts and shares annotated."""
    groups = ("negative", "positive", "test")
    counts = [stats["groups"][g]["patches"] for g in groups]
    train = counts[0] + counts[1]
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    bars = ax.bar(
        ["0: negative", "1: positive", "test"],
        counts,
        color=[GROUP_COLOURS[g] for g in groups],
        hatch=[None, None, "//"],
        label=[GROUP_TITLES[g] for g in groups],
    )
    for bar, n, g in zip(bars, counts, groups):
        note = f"{n:,}" + (f"\n{n / train:.1%} of train" if g != "test" and train else "")
        ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, max(counts + [1]) * 1.2)
    ax.set_xlabel("label")
    ax.set_ylabel("valid patches")
    ax.set_title("Label distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def patch_flags(stats: dict, groups=("negative", "positive", "test")) -> Figure:
    """Share of background, dark and blank patches per group (definitions from stats.json's thresholds)."""
    flags = ("background", "dark", "blank")
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    width = 0.8 / len(groups)
    x = np.arange(len(flags))
    for i, g in enumerate(groups):
        s = stats["groups"][g]
        shares = [100 * (s[f"{f}_share"] or 0.0) for f in flags]
        bars = ax.bar(
            x + (i - (len(groups) - 1) / 2) * width, shares, width, color=GROUP_COLOURS[g], label=GROUP_TITLES[g]
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    t = stats["thresholds"]
    ax.set_xticks(
        x,
        [
            f"background\n(>{t['background_share']:.0%} px with RGB > {t['white_level']})",
            f"dark\n(mean < {t['dark_mean']:g})",
            f"blank\n(std < {t['blank_std']:g})",
        ],
    )
    ax.set_xlabel("patch flag")
    ax.set_ylabel("% of the group's patches")
    ax.set_title("Background, dark and blank patches by label")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _patch_cell(ax, pixels: np.ndarray, caption: str, colour: str = "black") -> None:
    ax.imshow(pixels)
    _outline_centre(ax, pixels.shape[0])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(caption, fontsize=7, color=colour)


def flagged_gallery(flagged: dict, counts: dict, scanned: int, columns: int = GALLERY_COLUMNS) -> Figure:
    """One row per flag: up to COLUMNS flagged patches, each captioned with its id and group.

    FLAGGED maps a flag to [(row, pixels)] (beam_jobs.report.scan); COUNTS to {group: flagged}; SCANNED is
    how many patches were looked at.
    """
    flags = list(flagged)
    fig = Figure(figsize=(1.6 * columns, 2.0 * len(flags) + 1.0))
    axes = fig.subplots(len(flags), columns, squeeze=False)
    for i, flag in enumerate(flags):
        found = sum(counts[flag].values())
        for k, ax in enumerate(axes[i]):
            if k < len(flagged[flag]):
                row, pixels = flagged[flag][k]
                _patch_cell(ax, pixels, f"{row.id[:8]}\n{GROUP_SHORT[row.group]}", GROUP_COLOURS[row.group])
            else:
                ax.set_axis_off()
        title = f"{flag}: {found:,} of {scanned:,} patches" + ("" if found else " (none to show)")
        axes[i][0].set_title(title, fontsize=9, loc="left", fontweight="bold")
    fig.suptitle("Patches flagged as background, dark or blank (a seeded random sample of valid files)")
    fig.legend(
        handles=[Patch(color=GROUP_COLOURS[g], label=GROUP_TITLES[g]) for g in GROUP_TITLES],
        loc="lower center",
        ncol=len(GROUP_TITLES),
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    return fig


def duplicate_pairs(groups: list, columns: int = 2) -> Figure:
    """Each group of identical patches as a pair side by side (first two members), captioned with source, id, label.

    GROUPS: beam_jobs.report.scan.DuplicateGroup with at least two members, their pixels in `pixels`
    ({(source, id): array}) passed as the second element: [(group, {key: pixels})].
    """
    pairs_per_row = columns
    n_rows = max(1, -(-len(groups) // pairs_per_row))
    fig = Figure(figsize=(3.4 * pairs_per_row, 2.1 * n_rows + 0.9))
    axes = fig.subplots(n_rows, 2 * pairs_per_row, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, (group, pixels) in enumerate(groups):
        r, c = divmod(k, pairs_per_row)
        colour = "#d62728" if group.conflicting_labels else "black"
        for j, member in enumerate(group.members[:2]):
            ax = axes[r][2 * c + j]
            ax.set_axis_on()
            label = "no label" if member.label == -1 else f"label {member.label}"
            _patch_cell(ax, pixels[(member.source, member.id)], f"{member.source} {member.id[:10]}\n{label}", colour)
        more = len(group.members) - 2
        axes[r][2 * c].set_title(
            f"group {k + 1}: {group.kind}"
            + (f", +{more} more" if more > 0 else "")
            + (", labels differ" if group.conflicting_labels else ""),
            fontsize=8,
            loc="left",
            color=colour,
        )
    fig.suptitle("Exact duplicates side by side\n(identical pixels; the first two of each group)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def stain_separation(examples: list[tuple[str, str, np.ndarray]]) -> Figure:
    """Colour deconvolution of each patch: RGB, then haematoxylin, eosin and DAB alone (Ruifrok & Johnston).

    EXAMPLES: [(id, group, pixels)]. Each stain panel shows how that stain's amount alone would look on white.
    """
    from pcam_tfds.core import stains

    columns = 1 + len(stains.STAINS)
    fig = Figure(figsize=(2.2 * columns, 2.3 * len(examples) + 0.8))
    axes = fig.subplots(len(examples), columns, squeeze=False)
    for i, (id_, group, pixels) in enumerate(examples):
        hed = stains.rgb_to_hed(pixels)
        _patch_cell(axes[i][0], pixels, f"{id_[:8]} ({GROUP_SHORT[group]})", GROUP_COLOURS[group])
        for k, name in enumerate(stains.STAINS):
            ax = axes[i][1 + k]
            ax.imshow(stains.stain_rgb(hed, k))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{name}: mean {hed[..., k].mean():.2f} OD", fontsize=7)
    for k, name in enumerate(("RGB patch", *stains.STAINS)):
        axes[0][k].set_title(name, fontsize=9)
    fig.suptitle("H&E colour deconvolution (Ruifrok & Johnston stain vectors): each stain alone")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def stain_histograms(histograms: dict, scanned: dict, value_range: tuple[float, float]) -> Figure:
    """Per stain, the share of pixels at each amount (optical density), one line per group.

    HISTOGRAMS: {group: (3, bins) counts}; SCANNED: {group: patches}; VALUE_RANGE: the bins' (low, high).
    """
    from pcam_tfds.core import stains

    fig = Figure(figsize=(15, 4.4))
    axes = fig.subplots(1, len(stains.STAINS))
    bins = next(iter(histograms.values())).shape[1]
    edges = np.linspace(*value_range, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for k, (ax, name) in enumerate(zip(axes, stains.STAINS)):
        for g, h in histograms.items():
            total = h[k].sum()
            if not total:
                continue
            ax.plot(
                centres,
                h[k] / total,
                color=GROUP_COLOURS[g],
                linewidth=1.2,
                linestyle="--" if g == "test" else "-",
                label=f"{GROUP_TITLES[g]}: {scanned[g]:,} patches",
            )
        ax.set_title(f"{name}")
        ax.set_xlabel(f"{name} amount (optical density)")
        ax.set_xlim(*value_range)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the group's pixels")
    axes[0].legend(fontsize=8, loc="upper right")
    fig.suptitle("Stain amounts by label (H&E colour deconvolution of a seeded random sample of patches)")
    fig.tight_layout()
    return fig
