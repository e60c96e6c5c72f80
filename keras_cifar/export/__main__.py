"""`python -m keras_cifar.export RUN_DIR`: SavedModel + TFLite files, each checked against the Keras model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_cifar import cli
from keras_cifar.export.formats import FORMATS


def formats_list(text: str) -> list[str]:
    names = list(FORMATS) if text == "all" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)} or all"
        )
    return names


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.parser(prog="python -m keras_cifar.export", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a finished training run (its model.keras is exported)")
    parser.add_argument(
        "--formats",
        type=formats_list,
        default=list(FORMATS),
        help=f"comma-separated, or all (default): {', '.join(FORMATS)}",
    )
    parser.add_argument("--out", type=Path, default=None, help="export folder (default exported_models/RUN_NAME)")
    parser.add_argument("--data-dir", default=None, help="local CIFAR-10 copy (default: the run's)")
    parser.add_argument("--source", default=None, choices=("auto", "local", "tfds"))
    parser.add_argument("--test-limit", type=int, default=None, help="check on the first N test images only")
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=500,
        help="training images that calibrate full-integer quantisation (default 500)",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        help="flag a format whose accuracy is more than this many points below Keras's (default 1)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from keras_cifar.data import load_cifar10
    from keras_cifar.export.exporter import export_run, read_run

    record, _ = read_run(args.run_dir)
    saved = record.config
    data = load_cifar10(args.data_dir or saved.get("data_dir"), args.source or saved.get("source", "auto"))
    calibration = data.x_train[:: max(1, len(data.x_train) // args.calibration_images)][: args.calibration_images]
    out = args.out or Path("exported_models") / args.run_dir.resolve().name
    report = export_run(
        args.run_dir,
        out,
        args.formats,
        data.x_test[: args.test_limit],
        data.y_test[: args.test_limit],
        calibration,
        data.class_names,
        args.max_accuracy_drop,
    )
    flagged = [name for name, row in report["formats"].items() if row["flagged"]]
    print(f"wrote {out}" + (f"; flagged: {', '.join(flagged)}" if flagged else ""))


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
