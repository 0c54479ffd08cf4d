"""The EDA report as one self-contained HTML page: no script, no external resource, images inline.

`render` takes the outputs of `beam_jobs.validate` and `beam_jobs.stats`, already
loaded, and the rendered figures; every value put into the page is escaped.
"""

from __future__ import annotations

import base64
import html

from pcam_tfds.core.channel_stats import CHANNELS, FLAGS

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; } th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; } code { background: #f6f6f6; padding: 0 0.2em; }
.note { color: #555; font-size: 0.9em; }
.wide { overflow-x: auto; } .wide td { overflow-wrap: anywhere; max-width: 30em; font-size: 0.9em; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def number(value) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"
    return esc("" if value is None else value)


def table(header, rows, numeric_from: int = 1) -> str:
    """An HTML table; columns from NUMERIC_FROM on are right-aligned numbers."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [
            f'<td class="n">{number(v)}</td>' if i >= numeric_from else f"<td>{esc(v)}</td>" for i, v in enumerate(row)
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{esc(name)}"><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
        f'<figcaption>{esc(caption)} (also <a href="{esc(name)}.png">{esc(name)}.png</a>)</figcaption></figure>'
    )


def channel_table(stats: dict) -> str:
    header = ["group", "patches"] + [f"mean {c}" for c in CHANNELS] + [f"std {c}" for c in CHANNELS]
    rows = []
    for g, s in stats["groups"].items():
        mean, std = s["mean"] or [None] * 3, s["std"] or [None] * 3
        rows.append([g, s["patches"], *mean, *std])
    return table(header, rows)


def flag_table(stats: dict) -> str:
    """Patches flagged per group, each as 'count (share)'."""
    header = ["group", "patches", "near-white pixels", *[f.replace("_", " ") for f in FLAGS]]
    rows = []
    for g, s in stats["groups"].items():
        white = s["near_white_pixel_share"]
        cells = [
            f"{s[f'{f}_patches']:,}" + ("" if s[f"{f}_share"] is None else f" ({100 * s[f'{f}_share']:.2f} %)")
            for f in FLAGS
        ]
        rows.append([g, s["patches"], "" if white is None else f"{100 * white:.2f} %", *cells])
    return table(header, rows)


def validation_section(summary: dict, rejected: tuple[list[dict], int], duplicates: tuple[list[dict], int]) -> str:
    s = summary
    parts = [
        f"<p><b>{s['total']:,} files: {s['valid']:,} valid, {s['rejected']:,} rejected.</b></p>",
        table(
            ["source", "files", "valid", "rejected"],
            [[k, v["total"], v["valid"], v["rejected"]] for k, v in s["by_source"].items()],
        ),
        "<h3>Rejected files by reason</h3>",
        table(["reason", "files"], s["rejected_by_reason"].items()) if s["rejected_by_reason"] else "<p>None.</p>",
    ]
    r = s["label_rows"]
    parts.append(
        f"<h3>train_labels.csv</h3><p>{r['total']:,} rows: {r['matched']:,} matched a file, {r['rejected']:,} rejected.</p>"
    )
    if r["rejected_by_reason"]:
        parts.append(table(["reason", "rows"], r["rejected_by_reason"].items()))
    d = s["duplicate_groups"]
    parts += [
        "<h3>Exact-duplicate pixels</h3>",
        table(
            [
                "groups within train",
                "within test",
                "across train and test",
                "with conflicting labels",
                "files in groups",
            ],
            [
                [
                    d["within_train"],
                    d["within_test"],
                    d["across_train_test"],
                    d["conflicting_labels"],
                    d["files_in_groups"],
                ]
            ],
            numeric_from=0,
        ),
    ]
    for title, (rows, total), name in (
        ("Rejected", rejected, "rejected.csv"),
        ("Duplicate", duplicates, "duplicates.csv"),
    ):
        if rows:
            more = f", first {len(rows)} shown" if total > len(rows) else ""
            parts.append(f"<h3>{title} entries ({total:,} rows of <code>{name}</code>{more})</h3>")
            parts.append(
                '<div class="wide">'
                + table(list(rows[0]), [list(x.values()) for x in rows], numeric_from=99)
                + "</div>"
            )
    return "\n".join(parts)


def render(
    *,
    title: str,
    stats: dict,
    summary: dict,
    rejected: tuple[list[dict], int],
    duplicates: tuple[list[dict], int],
    figures: dict[str, tuple[bytes, str]],
    sources: list[tuple[str, str]],
    generated: str,
) -> str:
    """The page. FIGURES maps a name to (PNG bytes, caption); SOURCES lists (what, path or link) of the inputs."""
    t = stats["thresholds"]
    f = stats["files"]

    def fig(name):
        return figure(name, *figures[name]) if name in figures else ""

    source_items = "".join(f"<li>{esc(what)}: <code>{esc(where)}</code></li>" for what, where in sources)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p class="note">Generated {esc(generated)} by <code>python -m beam_jobs.eda</code>. Statistics are exact, over
every valid patch ({f["valid"]:,} of {f["total"]:,} files; {f["rejected"]:,} rejected), not a sample.</p>
<ul class="note">{source_items}</ul>

<h2>Sample patches</h2>
{fig("sample_patches")}
{fig("channels")}

<h2>H&amp;E stains</h2>
<p>Colour deconvolution (Ruifrok &amp; Johnston) turns each pixel's optical density into amounts of
haematoxylin (nuclei, blue-purple), eosin (cytoplasm and stroma, pink) and DAB (absent from H&amp;E: what is
left shows where the fixed stain vectors do not fit), as pathologists read a slide stain by stain
(<code>pcam_tfds.core.stains</code>; the trainer's stain augmentation uses the same matrix).</p>
{fig("stains")}
{fig("stain_histograms")}

<h2>Label distribution</h2>
{fig("labels")}

<h2>RGB intensity histograms by label</h2>
{fig("histograms")}

<h2>Channel statistics for normalisation</h2>
<p>Per-channel mean and population standard deviation on the 0-255 scale, from exact sums of x and x<sup>2</sup>
over all pixels. Normalise with <code>(x - mean) / std</code> using the <b>train</b> row
(<code>pcam_tfds.core.channel_stats.load_channel_stats(path)</code>; divide both by 255 for images scaled to [0, 1]).</p>
{channel_table(stats)}

<h2>Background, dark and blank patches</h2>
<p>A pixel is near-white if all three channels are &gt; {esc(t["white_level"])}; a patch is <b>background</b> if more
than {esc(f"{t['background_share']:.0%}")} of its pixels are near-white, <b>dark</b> if the mean of all its values is
&lt; {esc(t["dark_mean"])}, <b>blank</b> if their standard deviation is &lt; {esc(t["blank_std"])}.</p>
{fig("flags")}
{flag_table(stats)}
{fig("flagged")}

<h2>Validation</h2>
{validation_section(summary, rejected, duplicates)}
{fig("duplicates")}
</body>
</html>
"""
