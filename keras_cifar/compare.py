"""`python -m keras_cifar.compare RUN_DIR... --out reports/NAME`: one report comparing finished runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_cifar import cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m keras_cifar.compare", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run directories, or folders holding them (a suite's output)")
    parser.add_argument("--out", type=Path, required=True, help="report folder (report.md, report.html, figures)")
    parser.add_argument("--exports", type=Path, default=None,
                        help="folder of exports (exported_models/): a run's formats are read from EXPORTS/RUN_NAME")
    parser.add_argument("--title", default="CIFAR-10 architecture comparison")
    parser.add_argument("--note", default=None, help="a line printed under the title (e.g. 'quick CPU runs')")
    return parser.parse_args(argv)


def build_report(run_paths, out: Path, exports=None, title="CIFAR-10 architecture comparison", note=None) -> Path:
    from keras_cifar.evaluation.compare import export_figures, find_runs, group_runs, load_run, measure_model, sections
    from keras_cifar.evaluation.comparison_report import build_section, render_html, render_markdown

    runs = [load_run(path) for path in find_runs(run_paths)]
    for run in runs:
        run.exports = export_figures(run, exports)
    measured = [measure_model(run) for run in runs]
    out.mkdir(parents=True, exist_ok=True)
    blocks = [("h1", title)] + ([("p", note)] if note else [])
    parts = sections(runs)
    if len(parts) > 1:
        blocks.append(("p", f"**These runs were scored on {len(parts)} different data sets, test sets or TTA "
                            "settings; each is compared in its own section and no figure mixes them.**"))
    for number, indices in enumerate(parts, start=1):
        first = runs[indices[0]]
        fingerprint, test_images, tta = first.data_key()
        if len(parts) > 1:
            blocks.append(("h2", f"Section {number}"))
        blocks.append(("p", f"Data fingerprint `{fingerprint}`, {test_images:,} test images, TTA {tta}; "
                            f"{len(indices)} run(s)."))
        groups = group_runs([runs[i] for i in indices], [measured[i] for i in indices])
        blocks += build_section(groups, first.data["class_names"], out, prefix=f"s{number}_" if len(parts) > 1 else "")
    (out / "report.md").write_text(render_markdown(blocks, out))
    (out / "report.html").write_text(render_html(blocks, title))
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    out = build_report(args.runs, args.out, args.exports, args.title, args.note)
    print(f"wrote {out / 'report.md'} and {out / 'report.html'}")


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
