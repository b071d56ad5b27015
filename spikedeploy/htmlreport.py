"""A small builder for self-contained HTML report pages.

One file, no external resources: inline CSS, tables, headings, links, and matplotlib figures
embedded as base64 PNG (rendered with the Agg canvas directly, so the global pyplot backend is
never touched)::

    page = HtmlPage("My report")
    page.heading("Results", 1)
    page.table(["layer", "ops"], [["conv1", "1,024"]], align="nr")
    page.figure(fig, "caption")
    html = page.render()

Legibility rules every report follows: a table sits in a container that scrolls (both ways, the
header row stays in view) instead of overflowing the page, and long layer names wrap at their dots;
an embedded figure is shown at its native pixel size (1 image pixel = 1 CSS pixel at 100 % zoom,
scrolling sideways if it is wider than the column), never shrunk to fit. :func:`markdown_html`
renders the Markdown the reports write (headings, lists, tables, inline code/bold/links) with the
same style, so a report written as Markdown gets an HTML twin.

:func:`audit_figures` draws the plots of an op-count audit (:mod:`spikedeploy.audit`): horizontal
bars, one row per layer, one figure per stage of the network, so a 200-layer model stays legible.
"""

from __future__ import annotations

import base64
import html
import io
import re
import struct
from typing import Iterable, List, Optional, Sequence, Tuple

__all__ = ["HtmlPage", "Markup", "figure_png", "png_size", "markdown_html", "audit_figures", "precision_figures",
           "layer_groups",
           "COLUMN_PX", "FIGURE_WIDTH_IN", "FIGURE_DPI", "ROW_HEIGHT_IN"]

#: the width of the content column (CSS px); figures are drawn to fit it at their native size
COLUMN_PX = 1240
FIGURE_DPI = 110
#: per-layer figures: width (inches; x FIGURE_DPI fits COLUMN_PX) and height per layer row
FIGURE_WIDTH_IN = 11.0
ROW_HEIGHT_IN = 0.24
#: at most this many layer rows in one per-layer figure (a longer stage is split)
MAX_ROWS_PER_FIGURE = 36

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1280px;
       padding: 0 1em; color: #1b1f23; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
.table-wrap { overflow: auto; max-height: 85vh; margin: 1em 0; border: 1px solid #d0d7de; max-width: 100%;
              width: fit-content; }
table { border-collapse: separate; border-spacing: 0; font-size: 0.88em; }
th, td { border-right: 1px solid #d0d7de; border-bottom: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top;
         overflow-wrap: break-word; text-align: left; }
th:last-child, td:last-child { border-right: none; }
tr:last-child td { border-bottom: none; }
th { background: #f6f8fa; position: sticky; top: 0; z-index: 1; }
tr:nth-child(even) td { background: #fbfcfd; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
td.r { white-space: nowrap; }
td.n { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: .92em;
       min-width: 10em;
       max-width: 24em; overflow-wrap: anywhere; }
td.t { min-width: 14em; }
caption { text-align: left; color: #57606a; padding: 4px 8px; }
figure { margin: 1.5em 0; }
.fig-wrap { overflow-x: auto; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figure img.native { max-width: none; }
img.pixel { image-rendering: pixelated; }
figcaption { color: #57606a; font-size: 0.9em; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: .92em;
       background: #f6f8fa; padding: 0 .25em; border-radius: 3px; overflow-wrap: anywhere; }
td.n code { font-size: 1em; background: none; padding: 0; }
.ok { color: #1a7f37; font-weight: 600; }
.bad { color: #cf222e; font-weight: 600; }
"""


class Markup(str):
    """A table cell (or list item) that is HTML already: inserted as is, not escaped."""


def figure_png(fig, dpi: int = FIGURE_DPI) -> bytes:
    """Render a matplotlib ``Figure`` to PNG bytes with the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def png_size(png: bytes) -> Tuple[int, int]:
    """(width, height) in pixels of PNG bytes (from the IHDR chunk)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", png[16:24])


def _wbr_name(text: str) -> str:
    """Escape ``text`` and let it break after dots and underscores (long layer names)."""
    return re.sub(r"([._/])", r"\1<wbr>", html.escape(text))


def _cell(value: object, kind: str) -> str:
    if isinstance(value, Markup):
        return str(value)
    text = str(value)
    return _wbr_name(text) if kind == "n" else html.escape(text)


class HtmlPage:
    """Accumulates body parts and renders one self-contained HTML document."""

    def __init__(self, title: str, css: str = CSS):
        self.title = title
        self.css = css
        self.parts: List[str] = []

    def raw(self, markup: str) -> "HtmlPage":
        """Append markup as is (the caller escapes it)."""
        self.parts.append(markup)
        return self

    def heading(self, text: str, level: int = 2) -> "HtmlPage":
        level = min(max(int(level), 1), 6)
        return self.raw(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> "HtmlPage":
        return self.raw(f"<p>{html.escape(text)}</p>")

    def link(self, text: str, href: str) -> "HtmlPage":
        return self.raw(f'<p><a href="{html.escape(href, quote=True)}">{html.escape(text)}</a></p>')

    def bullets(self, items: Iterable[str], *, html_items: bool = False, html: bool = False) -> "HtmlPage":
        """An unordered list; items are escaped unless ``html``/``html_items`` is set (or an item is
        :class:`Markup`)."""
        import html as _html

        as_html = html or html_items
        lis = "".join(f"<li>{i if (as_html or isinstance(i, Markup)) else _html.escape(i)}</li>" for i in items)
        return self.raw(f"<ul>{lis}</ul>")

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[object]], *, align: Optional[str] = None,
              caption: Optional[str] = None) -> "HtmlPage":
        """A table in a scrolling container (sticky header row). ``align``: one letter per column:
        ``l`` text, ``r`` number (right-aligned, never wrapped), ``n`` a name (monospace, breaks
        after dots), ``t`` long text (wraps, given room). A :class:`Markup` cell is inserted as HTML."""
        align = align or "l" * len(headers)

        def cls(i: int) -> str:
            c = align[i] if i < len(align) else "l"
            return f' class="{c}"' if c in "rnt" else ""

        out = ['<div class="table-wrap"><table>']
        if caption:
            out.append(f"<caption>{html.escape(caption)}</caption>")
        head_cls = [' class="r"' if i < len(align) and align[i] == "r" else "" for i in range(len(headers))]
        out.append("<thead><tr>" + "".join(f"<th{head_cls[i]}>{_cell(h, 'l')}</th>" for i, h in enumerate(headers))
                   + "</tr></thead><tbody>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td{cls(i)}>{_cell(c, align[i] if i < len(align) else 'l')}</td>"
                                        for i, c in enumerate(row)) + "</tr>")
        out.append("</tbody></table></div>")
        return self.raw("".join(out))

    def image_png(self, png: bytes, caption: Optional[str] = None, alt: str = "figure", *,
                  native: bool = True) -> "HtmlPage":
        """Embed PNG bytes. ``native``: shown at its pixel size (scrolls sideways when wider than
        the column) instead of being shrunk to the column."""
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        if native:
            w, h = png_size(png)
            img = (f'<div class="fig-wrap"><img class="native" width="{w}" height="{h}" '
                   f'alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}"/></div>')
        else:
            img = f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}"/>'
        return self.raw(f"<figure>{img}{cap}</figure>")

    def figure(self, fig, caption: Optional[str] = None, dpi: int = FIGURE_DPI, *, native: bool = True) -> "HtmlPage":
        """Embed a matplotlib ``Figure`` as a base64 PNG (at its native size, see :meth:`image_png`)."""
        return self.image_png(figure_png(fig, dpi=dpi), caption, alt=caption or "figure", native=native)

    def markdown(self, md: str, *, link_map=None) -> "HtmlPage":
        """Append Markdown rendered by :func:`markdown_html`."""
        return self.raw(markdown_html(md, link_map=link_map))

    def render(self) -> str:
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(self.title)}</title><style>{self.css}</style></head><body>\n"
            + "\n".join(self.parts)
            + "\n</body></html>\n"
        )


# ---------------------------------------------------------------------------------------------
# Markdown (the subset the reports write) -> HTML
# ---------------------------------------------------------------------------------------------

_VERDICT = re.compile(r"\b(SUCCESS|PASS(?:ED)?|OK)\b|\b(FAIL(?:ED)?|DIFFER|NO)\b")


def _inline(text: str, link_map=None) -> str:
    """Inline Markdown: `code` (names break at dots), **bold**, *emphasis*, [text](href); verdict
    words (SUCCESS/PASS/OK, FAIL/DIFFER) coloured."""
    out, pos = [], 0
    for m in re.finditer(r"`([^`]+)`", text):
        out.append(_inline_plain(text[pos:m.start()], link_map))
        out.append(f"<code>{_wbr_name(m.group(1))}</code>")
        pos = m.end()
    out.append(_inline_plain(text[pos:], link_map))
    return "".join(out)


def _inline_plain(text: str, link_map) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", s)

    def link(m):
        href = m.group(2)
        if link_map is not None:
            href = link_map(href)
        return f'<a href="{html.escape(href, quote=True)}">{m.group(1)}</a>'

    s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", link, s)
    return _VERDICT.sub(lambda m: f'<span class="{"ok" if m.group(1) else "bad"}">{m.group(0)}</span>', s)


def _split_row(line: str) -> List[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|"):
        s = s[:-1]
    return [c.strip() for c in s.split("|")]


def markdown_html(md: str, *, link_map=None) -> str:
    """The Markdown subset the reports write — ``#`` headings, ``-`` lists, pipe tables (alignment
    from the rule row), paragraphs, inline code/bold/emphasis/links — as HTML in the style of
    :class:`HtmlPage` (tables in scrolling containers, names that wrap). ``link_map``: a function
    applied to every link target (e.g. ``report.md`` -> ``report.html``)."""
    lines = md.splitlines()
    out: List[str] = []
    para: List[str] = []
    i = 0

    def flush():
        if para:
            out.append("<p>" + _inline(" ".join(para), link_map) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        s = line.strip()
        m = re.match(r"^(#{1,6})\s+(.*)$", s)
        if not s:
            flush()
            i += 1
        elif m:
            flush()
            lvl = len(m.group(1))
            out.append(f"<h{lvl}>{_inline(m.group(2), link_map)}</h{lvl}>")
            i += 1
        elif s.startswith("- ") or s.startswith("* "):
            flush()
            items = []
            while i < len(lines) and (lines[i].strip().startswith("- ") or lines[i].strip().startswith("* ")):
                items.append(lines[i].strip()[2:])
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(t, link_map)}</li>" for t in items) + "</ul>")
        elif s.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-{3,}", lines[i + 1].strip()):
            flush()
            headers = _split_row(s)
            rule = _split_row(lines[i + 1])
            align = "".join("r" if r.endswith(":") else "l" for r in rule)
            i += 2
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_split_row(lines[i]))
                i += 1
            # a column whose cells are all `code` holds names; a left column of long prose gets room
            kinds = []
            for c in range(len(headers)):
                cells = [r[c] for r in rows if c < len(r) and r[c]]
                if align[c:c + 1] == "r":
                    kinds.append("r")
                elif cells and all(x.startswith("`") and x.endswith("`") for x in cells):
                    kinds.append("n")
                elif cells and max(len(x) for x in cells) > 60:
                    kinds.append("t")
                else:
                    kinds.append("l")
            page = HtmlPage("")
            page.table([Markup(_inline(h, link_map)) for h in headers],
                       [[Markup(_inline(c, link_map)) for c in r] for r in rows], align="".join(kinds))
            out.append(page.parts[0])
        else:
            para.append(s)
            i += 1
    flush()
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# audit plots
# ---------------------------------------------------------------------------------------------


def _components(name: str) -> List[str]:
    """A layer name as path components; a numeric component stays with the one before it
    (``mrm.0``, ``blocks.11``), and an attention row's suffix (``attn [kv]``) is kept whole."""
    parts: List[str] = []
    for p in name.split("."):
        if parts and p.isdigit():
            parts[-1] += "." + p
        else:
            parts.append(p)
    return parts


def _common_prefix(names: Sequence[List[str]]) -> List[str]:
    if not names:
        return []
    pre = list(names[0][:-1])
    for n in names[1:]:
        k = 0
        while k < len(pre) and k < len(n) - 1 and pre[k] == n[k]:
            k += 1
        pre = pre[:k]
    return pre


def layer_groups(names: Sequence[str], max_rows: int = MAX_ROWS_PER_FIGURE) -> List[Tuple[str, List[int]]]:
    """Split layer ``names`` (in network order) into consecutive stages of at most ``max_rows``
    rows: by the first path component below the common prefix (``encoder``, ``decoder``), a stage
    that is too long by the next component (``mrm.0``, ``block3.1``), small neighbouring stages
    merged up to ``max_rows``. Returns (label, row indices) per group."""
    comps = [_components(n) for n in names]

    prefix_len = len(_common_prefix(comps))

    def split(idx: List[int], depth: int) -> List[Tuple[str, List[int]]]:
        runs: List[Tuple[str, List[int]]] = []
        for i in idx:
            key = ".".join(comps[i][: depth + 1]) if len(comps[i]) > depth + 1 else ".".join(comps[i][:depth]) or comps[i][0]
            if runs and runs[-1][0] == key:
                runs[-1][1].append(i)
            else:
                runs.append((key, [i]))
        out: List[Tuple[str, List[int]]] = []
        for key, members in runs:
            deeper = any(len(comps[i]) > depth + 2 for i in members)
            if len(members) > max_rows and deeper and len(runs) < len(idx):
                out.extend(split(members, depth + 1))
            elif len(members) > max_rows:
                for k in range(0, len(members), max_rows):
                    part = members[k:k + max_rows]
                    where = f"{key} " if key != ".".join(comps[members[0]][:prefix_len]) else ""
                    out.append((f"{where}layers {k + 1}–{k + len(part)} of {len(members)}", part))
            else:
                out.append((key, members))
        return out

    if not names:
        return []
    if len(names) <= max_rows:
        return [(".".join(_common_prefix(comps)) or "all layers", list(range(len(names))))]
    groups = split(list(range(len(names))), prefix_len)
    merged: List[Tuple[List[str], List[int]]] = []
    for key, members in groups:
        if merged and len(merged[-1][1]) + len(members) <= max_rows:
            merged[-1][0].append(key)
            merged[-1][1].extend(members)
        else:
            merged.append(([key], list(members)))
    pre = ".".join(comps[0][:prefix_len]) + "." if prefix_len else ""
    out = []
    for keys, members in merged:
        keys = [k[len(pre):] if pre and k.startswith(pre) else k for k in keys]
        label = keys[0] if len(keys) == 1 else (", ".join(keys) if len(keys) <= 4 else f"{keys[0]} … {keys[-1]}")
        out.append((label, members))
    return out


def _short(name: str, n: int = 46) -> str:
    return name if len(name) <= n else name[: n // 2 - 1] + "…" + name[-(n - n // 2):]


def _stage_label(label: str, n: int = 60) -> str:
    """A stage label for a tick: a list of stage names too long for it becomes 'first … last'."""
    if len(label) <= n:
        return label
    keys = label.split(", ")
    if len(keys) > 1:
        label = f"{keys[0]} … {keys[-1]}"
    return _short(label, n)


def _row_label(name: str, prefix: List[str]) -> str:
    comps = _components(name)
    k = len(prefix) if comps[: len(prefix)] == prefix and len(comps) > len(prefix) else 0
    return _short(".".join(comps[k:]))


def _stage_figure(n: int):
    """The frame of a per-stage figure: ``n`` layer rows, two panels sharing them (left 3/5,
    right 2/5). Returns ``(fig, left, right)``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIGURE_WIDTH_IN, 1.25 + ROW_HEIGHT_IN * n), layout="constrained")
    ax, ar = fig.subplots(1, 2, sharey=True, width_ratios=[3, 2])
    return fig, ax, ar


def _shade_row(axes, i: int, color: str) -> None:
    for a in axes:
        a.axhspan(i - 0.5, i + 0.5, color=color, lw=0, zorder=0)


def _style_stage_axes(ax, ar, labels: Sequence[str], left_label: str, right_label: str) -> None:
    """Row labels top to bottom, axis labels, light x grids, x ticks repeated on top of tall figures."""
    n = len(labels)
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel(left_label, fontsize=8)
    ar.set_xlabel(right_label, fontsize=8)
    for a in (ax, ar):
        a.grid(axis="x", color="#eaeef2")
        a.set_axisbelow(True)
        a.tick_params(axis="x", labelsize=8, labeltop=n > 12, top=n > 12)
    ar.tick_params(axis="y", left=False)


def _stage_title(fig, gi: int, groups, label: str, single: str, prefix: List[str]) -> str:
    """Set the figure's title (stage k of n, or ``single`` for one stage; the common name prefix
    the row labels omit) and return it without the prefix note."""
    where = ".".join(prefix)
    title = f"Stage {gi + 1}/{len(groups)}: {label}" if len(groups) > 1 else single
    fig.suptitle(title + (f"   (names below {where}.)" if where else ""), fontsize=10, x=0.01, ha="left")
    return title


def audit_figures(report) -> List[Tuple[object, str]]:
    """The audit plots as (matplotlib Figure, caption), each drawn to be shown at its native size
    (:data:`FIGURE_WIDTH_IN` x :data:`FIGURE_DPI` px wide, :data:`ROW_HEIGHT_IN` per layer row):

    - with more than one stage, the ops per stage (measured vs the papers' estimate);
    - per stage (:func:`layer_groups`), one figure with a horizontal bar per layer: measured SynOps
      vs the papers' estimate (log scale; host layers: MACs, shaded) and the firing rate per time
      step of the neuron feeding the layer;
    - the energy breakdown."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    figs = []
    rows = [l for l in report.layers if l.kind in ("synapse", "attention", "host")]
    groups = layer_groups([l.name for l in rows])
    T = max(int(report.T), 1)
    step_colors = ["#2da44e", "#f0883e", "#8250df", "#bf3989", "#0a7ea4", "#57606a"]  # not the ops colours

    def ops_of(l):
        return max(l.theoretical_ops, 0.0), (l.macs if l.host else l.measured_synops)

    if len(groups) > 1:
        labels = [g[0] for g in groups]
        theo = np.array([sum(ops_of(rows[i])[0] for i in g[1]) for g in groups])
        meas = np.array([sum(ops_of(rows[i])[1] for i in g[1]) for g in groups])
        n = len(groups)
        fig = Figure(figsize=(FIGURE_WIDTH_IN, 1.5 + ROW_HEIGHT_IN * 1.5 * n), layout="constrained")
        ax = fig.add_subplot(111)
        y = np.arange(n)
        h = 0.38
        ax.barh(y - h / 2, theo, h, color="#9ec5f4", label="theoretical (FLOPs × T × rate)")
        ax.barh(y + h / 2, meas, h, color="#1f6feb", label="measured (SynOps; host: MACs)")
        ax.set_yticks(y)
        ax.set_yticklabels([f"{_stage_label(s)}  ({len(g[1])} layers)" for s, g in zip(labels, groups)], fontsize=8)
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_xlabel("ops per frame", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(axis="x", color="#eaeef2")
        ax.set_axisbelow(True)
        fig.suptitle("Ops per stage: measured vs the papers' estimate", fontsize=10, x=0.01, ha="left")
        fig.legend(loc="outside upper right", ncol=2, fontsize=8, frameon=False)
        figs.append((fig, "Ops per stage of the network (sum over its layers); one per-layer figure per stage follows."))

    for gi, (label, idx) in enumerate(groups):
        sub = [rows[i] for i in idx]
        prefix = _common_prefix([_components(l.name) for l in sub])
        n = len(sub)
        fig, ax, ar = _stage_figure(n)
        y = np.arange(n)
        theo = np.array([ops_of(l)[0] for l in sub])
        meas = np.array([ops_of(l)[1] for l in sub])
        h = 0.38
        ax.barh(y - h / 2, np.where(theo > 0, theo, np.nan), h, color="#9ec5f4", label="theoretical (FLOPs × T × rate)")
        ax.barh(y + h / 2, np.where(meas > 0, meas, np.nan), h, color="#1f6feb", label="measured (SynOps; host: MACs)")
        for i, l in enumerate(sub):
            if l.host:
                _shade_row((ax, ar), i, "#fbeec4")
        if np.any(theo > 0) or np.any(meas > 0):
            ax.set_xscale("log")
        _style_stage_axes(ax, ar, [_row_label(l.name, prefix) + ("  [host]" if l.host else "") for l in sub],
                          "ops per frame (log scale)", "firing rate of the source neuron (mean integer q)")
        w = 0.8 / T
        for t in range(T):
            vals = [l.rates_per_step[t] if (not l.host and t < len(l.rates_per_step)) else np.nan for l in sub]
            ar.barh(y - 0.4 + w * (t + 0.5), vals, w, color=step_colors[t % len(step_colors)], label=f"T{t + 1}")
        title = _stage_title(fig, gi, groups, label, "Per-layer ops and firing rates", prefix)
        handles = ax.get_legend_handles_labels()
        rh = ar.get_legend_handles_labels()
        fig.legend(handles[0] + (rh[0] if T > 1 else []), handles[1] + (rh[1] if T > 1 else []),
                   loc="outside upper right", ncol=2 + (T if T > 1 else 0), fontsize=8, frameon=False)
        first, last = idx[0] + 1, idx[-1] + 1
        figs.append((fig, f"{title}: layers {first}–{last} of {len(rows)}. Left: measured SynOps vs the papers' "
                          f"estimate per frame (log scale; shaded [host] rows are real-valued layers counted as "
                          f"MACs). Right: firing rate of the neuron feeding each layer, per time step (can exceed 1)."))

    t = report.totals["per_frame"]
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot(111)
    parts = [("SynOps", t["energy_synops_pj"], "#1f6feb"), ("host MACs", t["energy_macs_pj"], "#f2cc60"),
             ("neuron updates", t["energy_neurons_pj"], "#8250df")]
    theo_parts = [("SynOps", report.profile.e_ac_pj * t["theoretical_ops"], "#1f6feb"),
                  ("host MACs", report.profile.e_mac_pj * t["host_macs"], "#f2cc60"), ("neuron updates", 0.0, "#8250df")]
    for col, (label, ps) in enumerate((("measured", parts), ("papers' method", theo_parts))):
        bottom = 0.0
        for name, v, color in ps:
            ax.bar(col, v, 0.55, bottom=bottom, color=color, label=name if col == 0 else None)
            bottom += v
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["measured", "papers' method"])
    ax.set_ylabel("energy per frame [pJ]")
    ax.set_title(f"Energy breakdown ({report.profile.name})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs.append((fig, f"Energy per frame split into SynOps, host MACs and neuron updates ({report.profile.name} profile)."))
    return figs


def precision_figures(report) -> List[Tuple[object, str]]:
    """The plots of a fixed-point measurement (:class:`spikedeploy.equivalence.PrecisionReport`)
    as (Figure, caption): per stage of the network (:func:`layer_groups`), one horizontal bar per
    neuron layer: the q mismatch rate against float teacher-forced and free-running (left) and the
    largest relative weight error of the ops feeding the layer (right); rows with saturation events
    are shaded red. Drawn for native size, like :func:`audit_figures`."""
    import numpy as np

    rows = list(report.layers)
    groups = layer_groups([l.name for l in rows])
    figs = []
    for gi, (label, idx) in enumerate(groups):
        sub = [rows[i] for i in idx]
        prefix = _common_prefix([_components(l.name) for l in sub])
        n = len(sub)
        fig, ax, ar = _stage_figure(n)
        y = np.arange(n)
        el = np.array([max(l.elements, 1) for l in sub], dtype=float)
        tf = 100.0 * np.array([l.mismatches_tf for l in sub]) / el
        fr = 100.0 * np.array([l.mismatches_free for l in sub]) / el
        h = 0.38
        ax.barh(y - h / 2, tf, h, color="#1f6feb", label="teacher-forced (fed the float spikes)")
        ax.barh(y + h / 2, fr, h, color="#9ec5f4", label="free-running")
        for i, l in enumerate(sub):
            if l.saturated or l.target_saturated:
                _shade_row((ax, ar), i, "#ffd8d3")
        ar.barh(y, [100.0 * l.weight_error_max for l in sub], 0.6, color="#f0883e", label="weight error max")
        _style_stage_axes(ax, ar, [_row_label(l.name, prefix) + ("  [saturated]" if l.saturated else "") for l in sub],
                          "q mismatches vs float [% of the layer's values]",
                          "largest weight error, max|W - W_q| / max|W| [%]")
        title = _stage_title(fig, gi, groups, label, "Per-layer quantization error", prefix)
        hl = ax.get_legend_handles_labels()
        fig.legend(hl[0], hl[1], loc="outside upper right", ncol=2, fontsize=8, frameon=False)
        first, last = idx[0] + 1, idx[-1] + 1
        figs.append((fig, f"{title}: neuron layers {first}–{last} of {len(rows)}, {report.weight_bits}-bit weights. "
                          "Left: positions whose spike count differs from the float run. Right: the largest relative "
                          "weight error of the quantized ops feeding the layer. Red rows: saturation events."))
    return figs


def adaptive_budget_figure(adaptive) -> object:
    """The adaptive spike budget of a DI-LIF network (``AuditReport.adaptive``), three panels over
    the macro-steps (frames): D per DI-LIF layer as a heat map (one row per layer, so it stays
    legible for many layers: its height grows with them), the input density, and the measured
    SynOps per step with DI-LIF against the same network with D fixed at D_init."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, MaxNLocator

    names = list(adaptive["layers"])
    d = np.array([adaptive["d_per_step"][n] for n in names])  # [layers, T]
    n, T = d.shape
    prefix = _common_prefix([_components(x) for x in names])
    heat_h = max(1.2, ROW_HEIGHT_IN * n)
    fig = Figure(figsize=(FIGURE_WIDTH_IN, 1.6 + heat_h + 2 * 1.6), layout="constrained")
    axd, axi, axs = fig.subplots(3, 1, sharex=True, height_ratios=[heat_h, 1.6, 1.6])
    d_max = 2 * max(adaptive["d_init"].values())
    im = axd.imshow(d, aspect="auto", cmap="viridis", vmin=1, vmax=d_max, interpolation="nearest",
                    extent=(0.5, T + 0.5, n - 0.5, -0.5))
    axd.set_yticks(range(n))
    axd.set_yticklabels([_row_label(x, prefix) for x in names], fontsize=8)
    cb = fig.colorbar(im, ax=axd, pad=0.01, fraction=0.03)
    cb.set_label("D (mean over inputs)", fontsize=8)
    cb.ax.tick_params(labelsize=8)
    axd.set_title("firing limit D per DI-LIF layer" + (f"   (names below {'.'.join(prefix)}.)" if prefix else ""),
                  fontsize=9, loc="left")
    steps = np.arange(1, T + 1)
    axi.plot(steps, adaptive["input_density"], marker="o", color="#0a7ea4", label="density (mean input per element)")
    axi.set_ylabel("input density", fontsize=8)
    ax2 = axi.twinx()
    ax2.plot(steps, adaptive["input_active"], marker="s", ls="--", color="#bf3989", label="active share (non-zero)")
    ax2.set_ylabel("active share", fontsize=8)
    ax2.tick_params(labelsize=8)
    h1, l1 = axi.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    axi.legend(h1 + h2, l1 + l2, fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(0, 1), ncol=2,
               borderaxespad=0.2)
    w = 0.38
    axs.bar(steps - w / 2, adaptive["synops_per_step"], w, color="#1f6feb", label="DI-LIF (adaptive D)")
    axs.bar(steps + w / 2, adaptive["fixed_synops_per_step"], w, color="#9ec5f4", label="fixed D = D_init")
    axs.set_ylabel("SynOps per step", fontsize=8)
    axs.yaxis.set_major_formatter(EngFormatter(sep=""))
    axs.legend(fontsize=8, frameon=False, ncol=2, loc="lower left", bbox_to_anchor=(0, 1), borderaxespad=0.2)
    axs.set_xlabel("macro-step (frame)", fontsize=8)
    axs.xaxis.set_major_locator(MaxNLocator(integer=True))
    for a in (axd, axi, axs):
        a.tick_params(labelsize=8)
    for a in (axi, axs):
        a.grid(axis="y", color="#eaeef2")
        a.set_axisbelow(True)
    fig.suptitle("Adaptive spike budget: DI-LIF against a fixed D", fontsize=10, x=0.01, ha="left")
    return fig
