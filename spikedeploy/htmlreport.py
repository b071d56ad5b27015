"""A small builder for self-contained HTML report pages.

One file, no external resources: inline CSS, tables, headings, links, and matplotlib figures
embedded as base64 PNG (rendered with the Agg canvas directly, so the global pyplot backend is
never touched)::

    page = HtmlPage("My report")
    page.heading("Results", 1)
    page.table(["layer", "ops"], [["conv1", "1,024"]], align="lr")
    page.figure(fig, "caption")
    html = page.render()

:func:`audit_figures` draws the plots of an op-count audit (:mod:`spikedeploy.audit`).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Iterable, List, Optional, Sequence, Tuple

__all__ = ["HtmlPage", "figure_png", "audit_figures"]

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1280px;
       padding: 0 1em; color: #1b1f23; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.88em; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.9em; }
code { background: #f6f8fa; padding: 0 .25em; border-radius: 3px; }
"""


def figure_png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib ``Figure`` to PNG bytes with the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


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
        """An unordered list; items are escaped unless ``html``/``html_items`` is set."""
        import html as _html

        as_html = html or html_items
        lis = "".join(f"<li>{i if as_html else _html.escape(i)}</li>" for i in items)
        return self.raw(f"<ul>{lis}</ul>")

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[object]], *, align: Optional[str] = None,
              caption: Optional[str] = None) -> "HtmlPage":
        """A table; ``align`` is one letter per column ('l' or 'r')."""
        align = align or "l" * len(headers)

        def cls(i: int) -> str:
            return ' class="r"' if i < len(align) and align[i] == "r" else ""

        out = ["<table>"]
        if caption:
            out.append(f"<caption>{html.escape(caption)}</caption>")
        out.append("<tr>" + "".join(f"<th{cls(i)}>{html.escape(str(h))}</th>" for i, h in enumerate(headers)) + "</tr>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td{cls(i)}>{html.escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>")
        out.append("</table>")
        return self.raw("".join(out))

    def image_png(self, png: bytes, caption: Optional[str] = None, alt: str = "figure") -> "HtmlPage":
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return self.raw(f'<figure><img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}"/>{cap}</figure>')

    def figure(self, fig, caption: Optional[str] = None, dpi: int = 110) -> "HtmlPage":
        """Embed a matplotlib ``Figure`` as a base64 PNG."""
        return self.image_png(figure_png(fig, dpi=dpi), caption, alt=caption or "figure")

    def render(self) -> str:
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{self.css}</style></head><body>\n"
            + "\n".join(self.parts)
            + "\n</body></html>\n"
        )


# ---------------------------------------------------------------------------------------------
# audit plots
# ---------------------------------------------------------------------------------------------


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


def audit_figures(report) -> List[Tuple[object, str]]:
    """The audit plots as (matplotlib Figure, caption): per-layer measured vs theoretical ops (log
    scale), per-layer firing rates per time step, and the energy breakdown."""
    import numpy as np
    from matplotlib.figure import Figure

    figs = []
    spike = list(report.spike_layers)
    host = list(report.host_layers)
    rows = spike + host
    if rows:
        names = [_short(l.name) for l in rows]
        theo = np.array([max(l.theoretical_ops, 0.0) for l in rows])
        meas = np.array([l.measured_synops if not l.host else l.macs for l in rows])
        x = np.arange(len(rows))
        fig = Figure(figsize=(max(7.0, 0.45 * len(rows) + 2), 4.2))
        ax = fig.add_subplot(111)
        w = 0.4
        ax.bar(x - w / 2, np.where(theo > 0, theo, np.nan), w, label="theoretical (FLOPs × T × rate)", color="#9ec5f4")
        ax.bar(x + w / 2, np.where(meas > 0, meas, np.nan), w, label="measured (SynOps; host: MACs)", color="#1f6feb")
        for i, l in enumerate(rows):
            if l.host:
                ax.axvspan(i - 0.5, i + 0.5, color="#f2cc60", alpha=0.25, lw=0)
        if np.any(theo > 0) or np.any(meas > 0):
            ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("ops per frame")
        ax.set_title("Per-layer ops: measured vs the papers' estimate (host layers shaded)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs.append((fig, "Measured SynOps vs theoretical ops per layer (log scale); shaded: host / real-valued "
                          "layers counted as MACs."))
    if spike:
        T = report.T
        x = np.arange(len(spike))
        fig = Figure(figsize=(max(7.0, 0.45 * len(spike) + 2), 4.0))
        ax = fig.add_subplot(111)
        w = 0.8 / max(T, 1)
        for t in range(T):
            ax.bar(x - 0.4 + w * (t + 0.5), [l.rates_per_step[t] for l in spike], w, label=f"T{t + 1}")
        ax.set_xticks(x)
        ax.set_xticklabels([_short(l.name) for l in spike], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("firing rate (mean integer q)")
        ax.set_title("Firing rate of the neuron feeding each layer, per time step")
        if T > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        figs.append((fig, "Per-layer firing rates (mean integer output of the source neuron; can exceed 1)."))
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
