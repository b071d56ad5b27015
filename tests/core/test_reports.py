"""Reports a person can read: per-layer audit plots that stay legible for a 200-layer model, tables
that fit the page, an HTML twin of the verification report, a tracking GIF whose legend stays off
the frame and whose box colours are exact on every frame, distinct styles for coinciding targets,
and the number of scored frames beside every score."""

import io
import json
import re
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest

from spikedeploy import htmlreport as H
from spikedeploy.tracking import run as TR
from spikedeploy.tracking.metrics import score_tracking

# ---------------------------------------------------------------------------------------------
# audit plots and tables
# ---------------------------------------------------------------------------------------------


def _fake_audit(n_layers: int, T: int = 1):
    """An audit-shaped report of ``n_layers`` synaptic rows named like a deep network's."""
    layers = []
    for i in range(n_layers):
        stage, block = divmod(i, 25)
        host = i == 0
        layers.append(SimpleNamespace(
            name=f"model.encoder.stage{stage}.{block // 5}.block.conv{block % 5}.0", kind="host" if host else "synapse",
            host=host, theoretical_ops=1000.0 * (i + 1), measured_synops=0.0 if host else 900.0 * (i + 1),
            macs=5000.0 if host else 0.0, rates_per_step=() if host else tuple(0.1 + 0.01 * t for t in range(T))))
        layers.append(SimpleNamespace(name=f"model.encoder.stage{stage}.spike{i}", kind="neuron", host=False))
    totals = {"energy_synops_pj": 10.0, "energy_macs_pj": 5.0, "energy_neurons_pj": 0.0, "theoretical_ops": 100.0,
              "host_macs": 10.0}
    return SimpleNamespace(layers=layers, T=T, totals={"per_frame": totals},
                           profile=SimpleNamespace(name="45nm", e_ac_pj=0.9, e_mac_pj=4.6))


def test_layer_groups_cover_every_layer_in_order_and_stay_small():
    names = [f"model.encoder.stage{i // 25}.{(i % 25) // 5}.conv{i % 5}" for i in range(200)] + \
            [f"model.decoder.head{i}" for i in range(7)]
    groups = H.layer_groups(names)
    flat = [i for _, g in groups for i in g]
    assert flat == list(range(len(names)))
    assert all(0 < len(g) <= H.MAX_ROWS_PER_FIGURE for _, g in groups)
    assert len(groups) >= len(names) / H.MAX_ROWS_PER_FIGURE
    assert all(not label.startswith("model.") for label, _ in groups)  # the common prefix is not repeated
    assert any("decoder" in label for label, _ in groups)
    # a flat model of few layers is one group; a long flat run is split into numbered parts
    assert H.layer_groups(["stem", "conv1", "head"]) == [("all layers", [0, 1, 2])]
    parts = H.layer_groups([f"net.l{i}" for i in range(100)])
    assert [len(g) for _, g in parts] == [36, 36, 28] and "layers 1–36 of 100" in parts[0][0]


@pytest.mark.parametrize("n_layers,T", [(200, 1), (40, 3)])
def test_per_layer_figures_are_legible_at_native_size(n_layers, T):
    """Every per-layer figure fits the page column at its native pixel size (no shrinking), its
    height grows with its number of rows (>= 20 px per layer row) and its labels are >= 11 px."""
    report = _fake_audit(n_layers, T)
    figs = H.audit_figures(report)
    groups = H.layer_groups([l.name for l in report.layers if l.kind != "neuron"])
    assert len(figs) == len(groups) + (1 if len(groups) > 1 else 0) + 1  # stage overview, per stage, energy
    per_layer = figs[1:-1] if len(groups) > 1 else figs[:-1]
    assert len(per_layer) == len(groups)
    for (fig, caption), (_, idx) in zip(per_layer, groups):
        png = H.figure_png(fig)
        w, h = H.png_size(png)
        assert w <= H.COLUMN_PX, (w, caption)
        assert h / len(idx) >= 20, (h, len(idx))
        ax = fig.axes[0]
        labels = ax.get_yticklabels()
        assert len(labels) == len(idx)
        assert min(t.get_fontsize() for t in labels) * H.FIGURE_DPI / 72 >= 11
        assert all(len(t.get_text()) <= 60 for t in labels)
        assert f"of {n_layers}" in caption
    page = H.HtmlPage("x")
    fig, caption = per_layer[0]
    page.figure(fig, caption)
    png = H.figure_png(fig)
    w, h = H.png_size(png)
    assert f'class="native" width="{w}" height="{h}"' in page.parts[0]


def test_tables_scroll_in_a_container_and_names_wrap():
    page = H.HtmlPage("t")
    page.table(["layer", "ops", "why"], [["model.encoder.mrm.0.retriever.q_conv.0", "1,024", "x" * 10],
                                         [H.Markup("<b>bold</b>"), "2", "<script>"]], align="nrt")
    html = page.render()
    assert '<div class="table-wrap"><table>' in html and "</table></div>" in html
    assert re.search(r"\.table-wrap \{[^}]*overflow: auto", html) and "position: sticky" in html
    assert 'class="n">model.<wbr>encoder.<wbr>mrm.<wbr>0.<wbr>' in html
    assert "<b>bold</b>" in html and "&lt;script&gt;" in html and '<th class="r">ops</th>' in html


def test_markdown_html_renders_the_report_subset():
    md = ("# Title — SUCCESS\n\n- Model: `a.b`, **bold**\n- second\n\nSome *text* and [a link](x/report.md).\n\n"
          "| layer | n |\n|---|---:|\n| `conv.1` | 3 |\n| `conv.2` | **FAIL** |\n")
    out = H.markdown_html(md, link_map=lambda h: h.replace(".md", ".html"))
    assert '<h1>Title — <span class="ok">SUCCESS</span></h1>' in out
    assert "<ul><li>Model: <code>a.<wbr>b</code>, <b>bold</b></li><li>second</li></ul>" in out
    assert '<a href="x/report.html">a link</a>' in out and "<i>text</i>" in out
    assert '<td class="n"><code>conv.<wbr>1</code></td><td class="r">3</td>' in out
    assert '<b><span class="bad">FAIL</span></b>' in out


def test_verify_writes_an_html_report(tmp_path):
    from spikedeploy import api

    rep = api.verify("sdt-test", num_inputs=1, modes=["binary"], output=tmp_path / "v")
    files = sorted(p.name for p in (tmp_path / "v").iterdir() if not p.name.startswith("."))
    assert {"report.html", "report.json", "report.md"} <= set(files)
    html = (tmp_path / "v" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "table-wrap" in html
    assert "<h1>spikedeploy verification — " in html
    for s in rep.stages:
        assert f"<h2>Stage: {s.name}</h2>" in html
    assert '<a href="report.md">report.md</a>' in html and '<a href="report.json">report.json</a>' in html
    assert "`" not in re.sub(r"<[^>]+>", "", html.split("<body>")[1])  # no raw Markdown left
    assert html == rep.to_html()


# ---------------------------------------------------------------------------------------------
# tracking: GIF, curves, scored frames
# ---------------------------------------------------------------------------------------------


def _track_report(frames_per_target=None, n=6):
    """torch and lava-graded with identical boxes, reference-binary elsewhere, ground truth."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:160]
    base = np.stack([60 + xx * 0.8, 80 + yy, 140 - xx * 0.4], axis=-1)  # a smooth scene, some noise, an object
    frames = np.clip(base[None] + rng.normal(0, 4, size=(n, 120, 160, 3)), 0, 255).astype(np.uint8)
    for i in range(n):
        frames[i, 32:55, 42 + 3 * i:70 + 3 * i] = (200, 190, 90)
    gt = [[40.0 + 3 * i, 30.0, 30.0, 25.0] for i in range(n)]
    same = [[41.0 + 3 * i, 31.0, 30.0, 26.0] for i in range(n)]
    other = [[90.0, 60.0 + i, 20.0, 20.0] for i in range(n)]
    limits = frames_per_target or {}

    def run(t, boxes):
        k = limits.get(t, n)
        return TR.TargetTrack(t, boxes[:k], [None] + [0.9] * (k - 1), 0.01, 0.1)

    runs = {"torch": run("torch", same), "reference-binary": run("reference-binary", other),
            "lava-graded": run("lava-graded", same)}
    rep = TR.TrackReport("m", "w", "c", n, runs, ground_truth=gt)
    for t, r in runs.items():
        rep.scores[t] = asdict(score_tracking(np.asarray(r.boxes), np.asarray(gt)[: r.frames]))
    return frames, rep


def _gif_frames(data: bytes):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")))
    return out


def _outline(box, scale=1.0):
    x, y, w, h = (int(round(v * scale)) for v in box)
    return x, y, x + w, y + h


def test_gif_keeps_box_colours_exact_on_every_frame_including_the_first():
    frames, rep = _track_report()
    gif = _gif_frames(TR.annotated_gif(frames, rep))
    assert len(gif) == len(frames)
    colours = {t: TR._COLORS[k] for k, t in enumerate(rep.runs)}
    for i, g in enumerate(gif):
        for t, r in rep.runs.items():
            x0, y0, x1, y1 = _outline(r.boxes[i])
            edge = np.concatenate([g[y0, x0:x1 + 1], g[y1, x0:x1 + 1], g[y0:y1 + 1, x0], g[y0:y1 + 1, x1]])
            assert np.all(edge == colours[t], axis=1).sum() >= 10, (i, t)  # the exact colour, not a grey
        x0, y0, x1, y1 = _outline(rep.ground_truth[i])
        assert np.all(g[y0, x0:x1 + 1] == TR._GT_COLOR, axis=1).sum() >= 10, i


def test_gif_legend_is_below_the_frame_and_the_picture_is_untouched():
    frames, rep = _track_report()
    gif = _gif_frames(TR.annotated_gif(frames, rep))
    H_, W_ = frames.shape[1:3]
    for i, g in enumerate(gif):
        assert g.shape[1] == W_ and g.shape[0] > H_ + 12  # a legend strip below the frame
        strip = g[H_:]
        assert np.all(strip == TR._LEGEND_BG, axis=-1).mean() > 0.5 and (strip == TR._LEGEND_TEXT).all(-1).any()
        mask = np.ones((H_, W_), bool)  # everything but the box outlines (2 px) is the picture itself
        for b in [rep.ground_truth[i]] + [r.boxes[i] for r in rep.runs.values()]:
            x0, y0, x1, y1 = _outline(b)
            ring = np.zeros_like(mask)
            ring[max(0, y0 - 1):y1 + 2, max(0, x0 - 1):x1 + 2] = True
            ring[y0 + 2:y1 - 1, x0 + 2:x1 - 1] = False
            mask &= ~ring
        err = np.abs(g[:H_].astype(int) - frames[i].astype(int)).max(-1)
        # only palette rounding (the frames are noisy): no legend text or box colour on the picture
        assert err[mask].max() <= 40 and err[mask].mean() < 8, (i, err[mask].max(), err[mask].mean())
        assert err[:30, :80].max() <= 40  # where the old legend covered the frame


def test_coinciding_boxes_stay_visible_and_are_named_together():
    frames, rep = _track_report()
    gif = _gif_frames(TR.annotated_gif(frames, rep))
    c_torch, c_lava = TR._COLORS[0], TR._COLORS[2]
    for i in (0, 3):
        x0, y0, x1, y1 = _outline(rep.runs["torch"].boxes[i])
        edge = np.concatenate([gif[i][y0, x0:x1 + 1], gif[i][y0:y1 + 1, x1]])
        assert np.all(edge == c_torch, axis=1).sum() >= 6 and np.all(edge == c_lava, axis=1).sum() >= 6, i
    # grouping: torch and lava coincide (1 px tolerance), reference does not; None is left out
    boxes = [[40, 30, 30, 25], [41, 31, 30, 26], [90, 60, 20, 20], None, [40.5, 30, 30, 25]]
    assert TR._coincident_groups(boxes, 1.0) == [[0, 1, 4], [2]]
    # the legend names them together (the texts the strip is drawn from)
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    layout, height = TR._legend_layout(draw, TR._legend_font(),
                                       [("frame 0/5", None), ("torch = lava-graded", [c_torch, c_lava])], 160, 16)
    assert [e[2] for e in layout] == ["frame 0/5", "torch = lava-graded"] and height >= 16


def test_curves_of_coinciding_targets_differ_in_style_and_count_frames():
    _, rep = _track_report()
    fs, fp = TR._curve_figures(rep)
    for fig in (fs, fp):
        lines = {l.get_label(): l for l in fig.axes[0].get_lines() if not l.get_label().startswith("_")}
        labels = list(lines)
        assert any(lab.startswith("lava-graded = torch [") for lab in labels), labels
        assert all(re.search(r", 6 frames\]$", lab) for lab in labels), labels  # every frame, the first too
        torch = next(l for k, l in lines.items() if k.startswith("torch ["))
        lava = next(l for k, l in lines.items() if k.startswith("lava-graded"))
        assert (torch.get_linestyle(), torch.get_linewidth()) != (lava.get_linestyle(), lava.get_linewidth())
        assert lava.get_marker() not in (None, "None", "")


def test_scored_frames_are_beside_every_score_in_tables_and_json(tmp_path):
    frames, rep = _track_report({"lava-graded": 3})
    rows = {r[0]: r for r in TR._run_rows(rep)}
    headers = TR._run_headers(rep)
    i = headers.index("scored frames")
    assert headers[i + 1:] == ["AUC", "P@20", "SR0.5"]  # the otb protocol's headline numbers
    assert rows["torch"][i] == 6 and rows["lava-graded"][i] == 3
    md = TR.to_markdown(rep)
    assert "| scored frames | AUC | P@20 |" in md
    assert "different numbers of frames (torch 6, reference-binary 6, lava-graded 3)" in md
    assert "protocol `otb`, OTB (Wu et al. 2013)" in md
    assert "## Scores over the first 3 frames (tracked by every target)" in md
    common = TR.common_scores(rep)
    assert common["frames_tracked"] == 3 and {s["frames"] for s in common["scores"].values()} == {3}
    assert common["scores"]["torch"]["auc"] == common["scores"]["lava-graded"]["auc"]  # identical boxes
    js = rep.to_json()
    assert js["runs"]["lava-graded"]["scored_frames"] == 3 and js["runs"]["torch"]["frames_tracked"] == 6
    assert js["scores"]["lava-graded"]["frames"] == 3 and js["scores_common"] == common and js["protocol"] == "otb"
    out = TR.write_track_outputs(rep, frames, tmp_path / "t")
    html = (out / "report.html").read_text()
    assert "<th class=\"r\">scored frames</th>" in html and "Scores over the first 3 frames" in html
    assert re.search(r'<img class="native pixel" width="\d+" height="\d+" alt="annotated clip"', html)
    boxes = json.loads((out / "boxes.json").read_text())
    assert boxes["runs"]["lava-graded"]["scored_frames"] == 3
    assert json.loads((out / "report.json").read_text())["scores_common"]["frames_tracked"] == 3
    # equal frame counts: one line says how many, and no extra table
    _, same = _track_report()
    assert "over 6 frames each" in TR.to_markdown(same) and TR.common_scores(same) is None


def test_gif_legend_wraps_a_long_group_of_coinciding_targets_inside_the_frame_width():
    """Five coinciding boxes (the demo: ground truth and four targets) name a group wider than the
    GIF: it is broken at its separators, every line inside the width, every name still there."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    font = TR._legend_font()
    names = ["ground truth", "torch64", "reference-graded", "onnx", "lava-graded"]
    text = " = ".join(names)
    width = 256
    assert draw.textlength(text, font=font) > width  # the case: one entry wider than a line
    layout, height = TR._legend_layout(draw, font, [("frame 0/59", None), (text, [(1, 2, 3)] * 5)], width, 16)
    lines = [entry for entry in layout if entry[2] != "frame 0/59"]
    assert len(lines) >= 2 and sum(1 for e in lines if e[3]) == 1  # one swatch, on the first line
    for x, y, t, colors in lines:
        assert x + (22 if colors else 0) + draw.textlength(t, font=font) <= width - 4, t
    assert " ".join(t for _, _, t, _ in lines).replace(" =", "").split() == " ".join(names).split()
    assert height >= 16 * (len(lines) + 1)
