"""The report's figures (matplotlib's object API, never pyplot: no global backend or state).

Every figure uses constrained layout, labels its axes with units, names its split in the title and
carries a legend or colour bar where colours mean something. Text that comes from data (class
names, module names) goes through `label()`: its `$` are escaped, so matplotlib's mathtext draws a
class called `$x$` as `$x$`, not as a formula (TeX is off in `plain_text()`); bidi controls are made
visible and long names are cut. Axis text the code writes (log-scale ticks) still uses mathtext.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
from typing import Any, Iterator, Optional, Sequence

import numpy as np

COLORS = {"teacher": "#4c72b0", "baseline": "#8c8c8c", "student": "#dd8452", "fp32": "#4c72b0", "int8": "#c44e52"}
CRITICAL, OTHER = "#c44e52", "#9db3d1"
MAX_LABEL = 28
MAX_CLASSES_SHOWN = 15  # per-class error bars: the worst classes, at most this many
ANNOTATE_UP_TO = 12  # confusion matrices: counts written in the cells up to this many classes
TICKS_UP_TO = 30  # confusion matrices: class names on the axes up to this many classes

# bidi embeddings/overrides/isolates and marks, and the C0/C1 controls but tab and line breaks: shown as visible escapes, never obeyed
_CONTROLS = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def inert(text: Any) -> str:
    """`text` with bidi and control characters replaced by visible escapes (`\\u202e`), so they cannot reorder what follows."""
    return _CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))


def label(text: Any, limit: int = MAX_LABEL) -> str:
    """A name from data as a figure label: inert, and cut with an ellipsis past `limit` characters."""
    s = inert(text).replace("\n", "\\n").replace("\r", "\\r").replace("\t", " ")
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    return s.replace("$", "\\$")  # mathtext reads an escaped dollar as the character itself


@contextlib.contextmanager
def plain_text() -> Iterator[None]:
    """No TeX (a `\\` or `%` in a name must not reach a LaTeX run); mathtext stays for the code's own tick labels."""
    import matplotlib

    with matplotlib.rc_context({"text.usetex": False}):
        yield


def figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes, at the report's 100 dpi."""
    buf = io.BytesIO()
    with plain_text():
        fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a data: URI (the report is one self-contained file)."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def png(fig: Any) -> str:
    """The figure as a data: URI."""
    return data_uri(png_bytes(fig))


def as_image(chw: np.ndarray) -> np.ndarray:
    """A normalised [C, H, W] tensor as a displayable [H, W] or [H, W, 3] in [0, 1]."""
    img = np.asarray(chw, dtype=np.float64)
    img = (img - img.min()) / (img.max() - img.min() or 1.0)
    return img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))


# ----------------------------------------------------------------------------- training curves


def curves(
    distill: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]], teacher: Sequence[dict[str, Any]], loss_keys: Sequence[str]
) -> Any:
    """Loss terms, learning rate and temperature, and validation top-1 of each model per epoch."""
    fig = figure(12, 3.6)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ep = [row["epoch"] for row in distill]
    for key in loss_keys:
        ax1.plot(ep, [row[key] for row in distill], label=label(key), marker="." if len(ep) < 12 else None)
    ax1.set(title="Distillation loss terms", xlabel="epoch", ylabel="loss (per sample, mean)")
    if loss_keys:
        ax1.legend(fontsize=7, loc="upper right")
    lines = ax2.plot(ep, [row["lr"] for row in distill], color="#555", label="learning rate")
    ax2.set(title="Learning rate and temperature", xlabel="epoch", ylabel="learning rate")
    if all("temperature_mean" in row for row in distill):
        t = ax2.twinx()
        lines += t.plot(ep, [row["temperature_mean"] for row in distill], color=COLORS["student"], label="temperature T (mean)")
        t.set_ylabel("temperature T")
    ax2.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="upper right")
    for name, h in (("teacher", teacher), ("baseline", baseline), ("student", distill)):
        if h and all(isinstance(row.get("val_acc"), (int, float)) for row in h):
            ax3.plot([row["epoch"] for row in h], [100 * row["val_acc"] for row in h], label=name, color=COLORS[name], marker=".")
    ax3.set(title="Top-1 on val while training", xlabel="epoch", ylabel="top-1 on val (%)", ylim=(0, 100))
    if ax3.lines:
        ax3.legend(fontsize=7, loc="lower right")
    for ax in (ax1, ax2, ax3):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


# ----------------------------------------------------------------------------- per class


def worst_classes(per_class: dict[str, Sequence[Optional[float]]], order_by: str, limit: int = MAX_CLASSES_SHOWN) -> list[int]:
    """Class indices by the error rate of `order_by` (student when present), worst first; classes without samples last."""
    err = [None if a is None else 1 - a for a in per_class[order_by]]
    return sorted(range(len(err)), key=lambda c: (err[c] is None, -(err[c] or 0.0), c))[:limit]


def per_class_errors(classes: Sequence[str], per_class: dict[str, Sequence[Optional[float]]], split: str) -> Any:
    """Horizontal bars of the error rate per class and model, the worst classes (for the student) at the top."""
    split = label(split)
    names = [n for n in ("teacher", "baseline", "student") if n in per_class]
    order_by = "student" if "student" in per_class else names[0]
    shown = worst_classes(per_class, order_by)
    fig = figure(7.5, len(shown) * (0.09 * len(names) + 0.06) + 1.3)
    ax = fig.subplots()
    y, h = np.arange(len(shown)), 0.8 / len(names)
    top = 0.0
    for i, name in enumerate(names):
        err = [100 * (1 - a) if (a := per_class[name][c]) is not None else 0.0 for c in shown]
        ax.barh(y + i * h, err, h, label=name, color=COLORS[name])
        top = max(top, *err)
    ax.set_yticks(y + h * (len(names) - 1) / 2, [label(classes[c]) for c in shown], fontsize=8)
    ax.invert_yaxis()  # worst first, at the top
    ax.set_xlim(0, min(100.0, max(5.0, 1.15 * top)))  # small error rates stay readable
    ax.set_ylabel("class")
    ax.set_xlabel(f"error rate on {split} (%) = 100 − top-1")
    more = f", worst {len(shown)} of {len(classes)}" if len(shown) < len(classes) else ""
    ax.set_title(f"Per-class error rate on {split}, worst first (ordered by the {order_by}{more})", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def confusions(classes: Sequence[str], matrices: dict[str, Sequence[Sequence[int]]], split: str) -> Any:
    """One confusion matrix per model: colour = share of the true class, the count written in each cell; one colour bar."""
    split = label(split)
    names = [n for n in ("teacher", "baseline", "student") if n in matrices]
    c = len(classes)
    side = min(max(3.2, 0.32 * c + 1.5), 7.0)
    fig = figure(side * len(names) + 0.5, side + 0.4)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    image = None
    for ax, name in zip(axes, names):
        cm = np.asarray(matrices[name], dtype=np.int64)
        share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        acc = np.trace(cm) / max(cm.sum(), 1)
        ax.set(title=f"{name} ({100 * acc:.1f}% top-1)", xlabel="predicted class", ylabel="true class")
        if c <= TICKS_UP_TO:
            ticks = [label(n, 12) for n in classes]
            ax.set_xticks(range(c), ticks, rotation=90, fontsize=7)
            ax.set_yticks(range(c), ticks, fontsize=7)
        if c <= ANNOTATE_UP_TO:
            for (i, j), n in np.ndenumerate(cm):
                if n:
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if share[i, j] > 0.55 else "#222")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="share of the true class (row)")
    fig.suptitle(f"Confusion matrices on {split}" + ("; counts in the cells" if c <= ANNOTATE_UP_TO else ""), fontsize=10)
    return fig


# ----------------------------------------------------------------------------- attention and CKA


def attention_overlays(shown: Sequence[dict[str, Any]], teacher_att: np.ndarray, student_att: np.ndarray, split: str) -> Any:
    """Each image, then the teacher's and the student's attention laid over it, on one shared 0–1 scale with one colour bar."""
    split = label(split)
    k = len(shown)
    fig = figure(max(2.1 * k + 1.2, 5), 7.2)
    axes = fig.subplots(3, k, squeeze=False)
    image = None
    for j, s in enumerate(shown):
        img = as_image(s["image"])
        h, w = img.shape[:2]
        extent = (0, w, h, 0)
        agree = "agree" if s["agree"] else "disagree"
        axes[0, j].imshow(img, cmap="gray" if img.ndim == 2 else None, extent=extent)
        axes[0, j].set_title(f"{agree}, {'critical' if s['critical'] else 'other'}\ntrue: {label(s['label'], 16)}", fontsize=8)
        for row, (att, who) in enumerate(((teacher_att[j], "teacher"), (student_att[j], "student")), start=1):
            axes[row, j].imshow(img.mean(axis=2) if img.ndim == 3 else img, cmap="gray", extent=extent)
            image = axes[row, j].imshow(att, cmap="inferno", vmin=0, vmax=1, alpha=0.6, extent=extent, interpolation="bilinear")
            axes[row, j].set_title(f"{who} says {label(s[who], 14)}", fontsize=8)
        for row in range(3):
            axes[row, j].set_xticks([]), axes[row, j].set_yticks([])
    axes[1, 0].set_ylabel("teacher attention")
    axes[2, 0].set_ylabel("student attention")
    fig.colorbar(image, ax=axes[1:, :].ravel().tolist(), shrink=0.8, label="attention (each map scaled to 0–1)")
    fig.suptitle(f"Spatial attention over {split} images: where teacher and student agree and where they disagree", fontsize=10)
    return fig


def cka_bars(cka: Sequence[dict[str, Any]], samples: Any, split: str) -> Any:
    split, samples = label(split), label(samples)
    fig = figure(max(6, 1.3 * len(cka)), 3.0)
    ax = fig.subplots()
    names = [f"T {label(c['teacher_module'], 14)}\nS {label(c['student_module'], 14)}" for c in cka]
    ax.bar(range(len(cka)), [c["cka"] or 0 for c in cka], color=COLORS["student"])
    ax.set_xticks(range(len(cka)), names, fontsize=7)
    ax.set(ylim=(0, 1), ylabel="linear CKA (0–1)", xlabel="stage pair at the same relative depth (teacher T / student S)")
    ax.set_title(f"Linear CKA per stage pair on {samples} {split} images", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- critical samples


def critical_histogram(scores: np.ndarray, critical: np.ndarray, strategy: str) -> Any:
    """Scores of all training samples, the selected ones stacked on top; log counts so the thin tails show."""
    fig = figure(7, 3.0)
    ax = fig.subplots()
    bins = np.histogram_bin_edges(scores, bins=40)
    ax.hist(
        [scores[~critical], scores[critical]],
        bins=bins,
        stacked=True,
        log=True,
        label=["not selected", "selected (critical)"],
        color=[OTHER, CRITICAL],
    )
    ax.set(xlabel=f"criticality score ({label(strategy)}; higher = harder)", ylabel="training samples (log scale)")
    ax.set_title(f"Criticality scores of {len(scores)} training samples", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def example_strip(examples: Sequence[tuple[np.ndarray, str]]) -> Any:
    fig = figure(max(1.5 * len(examples), 4), 2.0)
    for ax, (img, caption) in zip(np.atleast_1d(fig.subplots(1, len(examples))), examples):
        im = as_image(img)
        ax.imshow(im, cmap="gray" if im.ndim == 2 else None)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"score {caption}", fontsize=8)
    return fig


# ----------------------------------------------------------------------------- INT8


def gap_bars(rows: Sequence[dict[str, Any]], samples: Any, split: str) -> Any:
    split, samples = label(split), label(samples)
    fig = figure(8, 0.32 * len(rows) + 1.4)
    ax = fig.subplots()
    names = [label(row.get("module") or row.get("node") or "?", 40) for row in rows][::-1]
    ax.barh(range(len(rows)), [row["gap_db"] for row in rows][::-1], color=COLORS["int8"])
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.set_ylabel("layer (student module)")
    ax.set_xlabel("SQNR lost in the layer (dB; higher = more INT8 error added there)")
    ax.set_title(f"Worst {len(rows)} layers by INT8 gap, on {samples} {split} images", fontsize=10)
    return fig


def latency_histogram(lat: dict[str, Any]) -> Any:
    fig = figure(7, 3.0)
    ax = fig.subplots()
    threads = label(lat.get("threads", "?"))
    if all("times_ms" in lat[k] for k in ("fp32", "int8")):
        times = {kind: np.asarray(lat[kind]["times_ms"], dtype=np.float64) for kind in ("fp32", "int8")}
        bins = np.histogram_bin_edges(np.concatenate(list(times.values())), bins=30)
        for kind, t in times.items():
            median = float(lat[kind].get("median_ms", np.median(t)))
            ax.hist(t, bins=bins, alpha=0.6, label=f"{kind.upper()} (median {median:.3f} ms)", color=COLORS[kind])
            ax.axvline(median, color=COLORS[kind], linestyle="--", linewidth=1)
        ax.set(xlabel="batch-1 latency (ms)", ylabel="timed runs")
    else:  # reports from before per-run times were kept
        qs = ("median_ms", "p90_ms", "p99_ms")
        x = np.arange(len(qs))
        ax.bar(x - 0.2, [lat["fp32"][q] for q in qs], 0.4, label="FP32", color=COLORS["fp32"])
        ax.bar(x + 0.2, [lat["int8"][q] for q in qs], 0.4, label="INT8", color=COLORS["int8"])
        ax.set_xticks(x, ["median", "p90", "p99"])
        ax.set(ylabel="batch-1 latency (ms)", xlabel="quantile")
    ax.set_title(f"Batch-1 latency of the ONNX student, {threads} thread(s)", fontsize=10)
    ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- detection

DETECTION_COLORS = {"truth": "#2ca02c", "teacher": COLORS["teacher"], "distill": COLORS["student"], "baseline": "#8172b3"}
MAX_BOXES_DRAWN = 15  # per panel, the highest-scoring


def _draw_boxes(ax: Any, boxes: np.ndarray, labels: np.ndarray, scores: Optional[np.ndarray], classes: Sequence[str], color: str) -> None:
    from matplotlib.patches import Rectangle

    for j, ((x1, y1, x2, y2), c) in enumerate(zip(boxes.tolist(), labels.tolist())):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.2))
        name = label(classes[c] if 0 <= c < len(classes) else c, 12)
        text = name if scores is None else f"{name} {scores[j]:.2f}"
        ax.text(x1, y1, text, fontsize=6, color="white", va="bottom", ha="left", bbox={"facecolor": color, "edgecolor": "none", "pad": 0.5})


def detection_grid(pictures: Sequence[Any], roles: Sequence[tuple[str, str]], classes: Sequence[str], min_score: float, split: str) -> Any:
    """One column per image: its ground truth on top, then each model's detections scored at least `min_score`
    (at most `MAX_BOXES_DRAWN`, the highest first), each box labelled with its class and score."""
    split = label(split)
    rows = [("truth", "ground truth"), *[(r, name) for r, name in roles if pictures and r in pictures[0].found]]
    k = len(pictures)
    fig = figure(max(2.0 * k + 0.6, 5), 2.1 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), k, squeeze=False)
    for j, p in enumerate(pictures):
        h, w = p.pixels.shape[:2]
        for i, (role, name) in enumerate(rows):
            ax = axes[i, j]
            ax.imshow(p.pixels, extent=(0, w, h, 0), interpolation="nearest" if w < 128 else "antialiased")  # small inputs: their pixels
            ax.set_xlim(0, w), ax.set_ylim(h, 0)
            if role == "truth":
                _draw_boxes(ax, p.truth.boxes, p.truth.labels, None, classes, DETECTION_COLORS["truth"])
                why = "they disagree most" if p.picked == "disagreement" else "a first val image"
                ax.set_title(
                    f"val #{p.index} (image id {p.image_id}): {why}\nteacher–student disagreement {p.disagreement:.2f}", fontsize=7
                )
            else:
                b = p.found[role].above(min_score)
                n = len(b.boxes)
                _draw_boxes(
                    ax, b.boxes[:MAX_BOXES_DRAWN], b.labels[:MAX_BOXES_DRAWN], b.scores[:MAX_BOXES_DRAWN], classes, DETECTION_COLORS[role]
                )
                ax.set_title(
                    f"{n} box{'es' if n != 1 else ''}" + (f" ({MAX_BOXES_DRAWN} drawn)" if n > MAX_BOXES_DRAWN else ""), fontsize=7
                )
            ax.set_xticks([]), ax.set_yticks([])
            for side in ax.spines.values():
                side.set_edgecolor(DETECTION_COLORS[role])
            if j == 0:
                ax.set_ylabel(name, fontsize=8, color=DETECTION_COLORS[role])
    fig.suptitle(f"Detections on {split} images (boxes scored ≥ {min_score:g}; class and score on each box)", fontsize=10)
    return fig
