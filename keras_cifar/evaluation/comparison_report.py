"""The comparison report as one list of blocks, rendered twice: report.md (PNG files beside it) and a
self-contained report.html (the same figures embedded), so the two never disagree."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from keras_cifar.evaluation import comparison_plots as plots
from keras_cifar.evaluation.compare import Group, pairs

ACCURACY = lambda r, m: 100 * r.accuracy  # noqa: E731


def _pm(group: Group, key, digits=2) -> str:
    std = group.std(key)
    return f"{group.mean(key):.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _opt(value, fmt):
    return "—" if value is None else format(value, fmt)


def summary_table(groups: list[Group]) -> tuple[list, list]:
    export_formats = sorted({f for g in groups for r in g.runs for f in r.exports})
    header = [
        "architecture",
        "runs",
        "test acc %",
        "macro P",
        "macro R",
        "macro F1",
        "top-5 %",
        "params (M)",
        "GFLOPs/img",
        "train time (s)",
        "epochs (best)",
        "train img/s",
        "CPU latency ms",
        "ECE %",
        "corrupted acc % (of clean)",
    ]
    header += [f"{f} acc % / ms" for f in export_formats]
    rows = []
    for g in groups:
        mean = g.mean
        training = lambda field, g=g: [r.training.get(field) for r in g.runs]  # noqa: E731
        best = [b for b in training("best_epoch") if b]
        row = [
            g.label,
            str(len(g.runs)),
            _pm(g, ACCURACY),
            f"{mean(lambda r, m: r.metrics['precision_macro']):.4f}",
            f"{mean(lambda r, m: r.metrics['recall_macro']):.4f}",
            _pm(g, lambda r, m: r.metrics["f1_macro"], 4),
            f"{mean(lambda r, m: 100 * r.metrics['top5_accuracy']):.2f}",
            f"{mean(lambda r, m: m['parameters']) / 1e6:.2f}",
            f"{mean(lambda r, m: m['flops']) / 1e9:.3f}",
            _opt(_mean_or_none(training("training_seconds")), ".0f"),
            f"{_mean_or_none(training('epochs_run')):.0f}" + (f" ({sorted(best)[len(best) // 2]})" if best else ""),
            _opt(_mean_or_none(training("train_images_per_second")), ".0f"),
            f"{mean(lambda r, m: m['latency_ms']):.2f}",
            _opt(_mean_or_none([ece(r) for r in g.runs]), ".2f"),
            _corrupted(g),
        ]
        for fmt in export_formats:
            figures = [r.exports[fmt] for r in g.runs if fmt in r.exports]
            row.append(f"{100 * figures[0]['accuracy']:.2f} / {figures[0]['latency_ms']:.2f}" if figures else "—")
        rows.append(row)
    return header, rows


def ece(run) -> float | None:
    """Expected calibration error in percent; None for a run evaluated before calibration was measured."""
    calibration = run.metrics.get("calibration")
    return 100 * calibration["ece"] if calibration else None


def corrupted(run) -> float | None:
    """Mean accuracy over the 30 corrupted test sets in percent; None unless `evaluate --corruptions` ran."""
    corruptions = run.metrics.get("corruptions")
    return 100 * corruptions["mean"] if corruptions else None


def _corrupted(group: Group) -> str:
    means = _mean_or_none([corrupted(r) for r in group.runs])
    shares = _mean_or_none([100 * r.metrics["corruptions"]["relative"] for r in group.runs if corrupted(r) is not None])
    return "—" if means is None else f"{means:.2f} ({shares:.0f} %)"


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def best_under_each_criterion(groups: list[Group]) -> list[str]:
    criteria = [
        ("highest test accuracy", ACCURACY, max, "{:.2f} %"),
        ("highest macro F1", lambda r, m: r.metrics["f1_macro"], max, "{:.4f}"),
        ("fewest parameters", lambda r, m: m["parameters"] / 1e6, min, "{:.2f} M"),
        ("fewest FLOPs per image", lambda r, m: m["flops"] / 1e9, min, "{:.3f} GFLOPs"),
        ("lowest CPU latency", lambda r, m: m["latency_ms"], min, "{:.2f} ms"),
        ("fastest training", lambda r, m: r.training.get("train_images_per_second") or 0.0, max, "{:.0f} img/s"),
        (
            "most accuracy per training second",
            lambda r, m: (
                100 * r.accuracy / r.training["training_seconds"] if r.training.get("training_seconds") else 0.0
            ),
            max,
            "{:.4f} points/s",
        ),
    ]
    lines = []
    for name, key, pick, fmt in criteria:
        best = pick(groups, key=lambda g: g.mean(key))
        lines.append(f"{name}: **{best.label}** ({fmt.format(best.mean(key))})")
    for name, key, pick, fmt in (
        ("best calibrated (lowest ECE)", ece, min, "{:.2f} %"),
        ("most accurate on corrupted images", corrupted, max, "{:.2f} %"),
    ):
        measured = [(g, _mean_or_none([key(r) for r in g.runs])) for g in groups]
        measured = [(g, v) for g, v in measured if v is not None]
        if measured:
            best, value = pick(measured, key=lambda pair: pair[1])
            lines.append(f"{name}: **{best.label}** ({fmt.format(value)})")
    return lines


def _per_training_minute(run, measured):
    seconds = run.training.get("training_seconds")
    return 60 * 100 * run.accuracy / seconds if seconds else None


def _corrupted_share(run, measured):
    return 100 * run.metrics["corruptions"]["relative"] if corrupted(run) is not None else None


# Each criterion: its name in a sentence, the value per run, whether higher is better, how to print the value.
CRITERIA = (
    ("accuracy", ACCURACY, True, "{:.2f} %"),
    ("accuracy per training minute", _per_training_minute, True, "{:.2f} points/min"),
    ("training speed", lambda r, m: r.training.get("train_images_per_second"), True, "{:,.0f} img/s"),
    ("accuracy per parameter", lambda r, m: 100 * r.accuracy / (m["parameters"] / 1e6), True, "{:,.0f} points/M"),
    ("accuracy per FLOP", lambda r, m: 100 * r.accuracy / (m["flops"] / 1e9), True, "{:,.0f} points/GFLOP"),
    ("CPU latency", lambda r, m: m["latency_ms"], False, "{:.2f} ms"),
    ("calibration", lambda r, m: ece(r), False, "ECE {:.2f} %"),
    ("robustness to corruptions", _corrupted_share, True, "{:.0f} % of its clean accuracy"),
)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def strengths_and_weaknesses(groups: list[Group], class_names) -> list[str]:
    """Per architecture, in words: the criteria where it ranks in the best third of the compared nets, those in
    the worst third, and the classes it confuses most. With fewer than three nets, best and worst only."""
    ranks = {g.label: ([], []) for g in groups}
    for name, key, higher, fmt in CRITERIA:
        values = [(g, _mean_or_none(g.values(key))) for g in groups]
        values = sorted(((g, v) for g, v in values if v is not None), key=lambda pair: -pair[1] if higher else pair[1])
        third = max(1, len(values) // 3)
        for place, (g, value) in enumerate(values, start=1):
            phrase = f"{name} ({fmt.format(value)}, {_ordinal(place)} of {len(values)})"
            if place <= third and len(values) > 1:
                ranks[g.label][0].append(phrase)
            elif place > len(values) - third and len(values) > 1:
                ranks[g.label][1].append(phrase)
    lines = []
    for g in groups:
        good, bad = ranks[g.label]
        confusions = plots.confused_pairs(g, class_names, 2)
        lines.append(
            f"**{g.label}**: good at {', '.join(good) or 'nothing in particular'}; "
            f"weak at {', '.join(bad) or 'nothing in particular'}"
            + (f"; confuses most {' and '.join(f'{t} → {p} ({c})' for t, p, c in confusions)}" if confusions else "")
            + "."
        )
    return lines


def per_run_table(groups: list[Group]) -> tuple[list, list]:
    header = ["run", "architecture", "seed", "test acc %", "macro F1", "train time (s)", "run dir"]
    rows = [
        [
            r.name,
            g.label,
            str(r.config["seed"]),
            f"{100 * r.accuracy:.2f}",
            f"{r.metrics['f1_macro']:.4f}",
            _opt(r.training.get("training_seconds"), ".0f"),
            str(r.path),
        ]
        for g in groups
        for r in g.runs
    ]
    return header, rows


def spread_table(groups: list[Group]) -> tuple[list, list]:
    header = ["A", "B", "A − B (points)", "test", "larger than seed spread?"]
    rows = []
    for p in pairs(groups):
        detail = (
            f"p = {p['p_value']:.3f}"
            if "p_value" in p
            else f"2σ = {2 * p['spread_points']:.2f}"
            if "spread_points" in p
            else ""
        )
        verdict = {True: "yes", False: "no", None: "unknown (one run each)"}[p["larger_than_spread"]]
        rows.append([p["a"], p["b"], f"{p['difference_points']:+.2f}", f"{p['test']} {detail}".strip(), verdict])
    return header, rows


def build_section(groups: list[Group], class_names, out: Path, prefix: str) -> list[tuple]:
    """The blocks of one comparable section, writing its figures to `out`."""
    figures = {
        "curves": ("Validation curves", plots.plot_curves, (groups,)),
        "f1": ("Per-class F1", plots.plot_f1_heatmap, (groups, class_names)),
        "confusion": (
            "Confusion matrices (rows: share of the true class; all seeds summed)",
            plots.plot_confusion_grid,
            (groups, class_names),
        ),
        "tradeoffs": ("Accuracy against size and latency (error bars: seed std)", plots.plot_tradeoffs, (groups,)),
        "pairs": ("Most-confused class pairs", plots.plot_confused_pairs, (groups, class_names)),
    }
    blocks = [
        ("table", *summary_table(groups)),
        ("h3", "Best under each criterion"),
        ("list", best_under_each_criterion(groups)),
        ("h3", "What each architecture is good and bad at"),
        (
            "p",
            "Its place among the nets compared here on each criterion: the best third counts as good, the worst "
            "third as weak (accuracy per parameter and per FLOP are test-accuracy points per million parameters "
            "and per GFLOP of one image's forward pass).",
        ),
        ("list", strengths_and_weaknesses(groups, class_names)),
        ("h3", "Seeds: is a difference real?"),
        (
            "p",
            "Each pair of rows above: the accuracy difference, and whether it is larger than the "
            "seed-to-seed spread (Welch's t-test where both have two or more seeds; else twice the "
            "standard deviation of the side that has seeds).",
        ),
        ("table", *spread_table(groups)),
        ("h3", "Every run"),
        ("table", *per_run_table(groups)),
    ]
    for key, (title, plot, args) in figures.items():
        path = out / f"{prefix}{key}.png"
        plot(*args, path)
        blocks += [("h3", title), ("image", path)]
    confused = [
        [g.label, ", ".join(f"{t} → {p} ({c})" for t, p, c in plots.confused_pairs(g, class_names, 3))] for g in groups
    ]
    blocks += [("table", ["architecture", "top-3 confusions (true → predicted, count)"], confused)]
    return blocks


def render_markdown(blocks, out: Path) -> str:
    lines = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + content[0], ""]
        elif kind == "p":
            lines += [content[0], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in content[0]] + [""]
        elif kind == "table":
            header, rows = content
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        elif kind == "image":
            lines += [f"![{content[0].stem}]({content[0].relative_to(out)})", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's **bold** as <strong>, everything else escaped."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks, title: str) -> str:
    body = []
    for kind, *content in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(content[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(content[0])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in content[0]) + "</ul>")
        elif kind == "table":
            header, rows = content
            body.append(
                "<div class='scroll'><table><thead><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                + "</tbody></table></div>"
            )
        elif kind == "image":
            data = base64.b64encode(Path(content[0]).read_bytes()).decode()
            body.append(f"<img alt='{html.escape(content[0].stem)}' src='data:image/png;base64,{data}'>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        ".scroll{overflow-x:auto}img{max-width:100%}.warning{background:#fff3cd;padding:.5em 1em}"
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{style}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
