"""`python -m keras_cifar.compare RUN_DIR... --out reports/NAME`: one report comparing finished runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_cifar import cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.parser(prog="python -m keras_cifar.compare", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run directories, or folders holding them (a suite's output)")
    parser.add_argument("--out", type=Path, required=True, help="report folder (report.md, report.html, figures)")
    parser.add_argument(
        "--exports",
        type=Path,
        default=None,
        help="folder of exports (exported_models/): a run's formats are read from EXPORTS/RUN_NAME",
    )
    parser.add_argument("--title", default="CIFAR-10 architecture comparison")
    parser.add_argument("--note", default=None, help="a line printed under the title (e.g. 'quick CPU runs')")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from keras_cifar.evaluation.compare import build_report

    out = build_report(args.runs, args.out, args.exports, args.title, args.note)
    print(f"wrote {out / 'report.md'} and {out / 'report.html'}")


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
