"""`python -m keras_cifar.evaluate RUN_DIR_OR_MODEL`: test-set metrics, calibration, the most confident mistakes
and, with --corruptions, accuracy under common corruptions; metrics.json and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_cifar import cli
from keras_cifar.config import TTA_MODES


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.parser(prog="python -m keras_cifar.evaluate", description=__doc__)
    parser.add_argument("target", help="a run directory (uses its model.keras and data settings) or a .keras file")
    parser.add_argument(
        "--data-dir", default=None, help="local CIFAR-10 copy (default: the run's, else $KERAS_CIFAR_DATA)"
    )
    parser.add_argument("--source", default=None, choices=("auto", "local", "tfds"))
    parser.add_argument("--test-limit", type=int, default=None, help="use only the first N test images")
    parser.add_argument(
        "--tta",
        nargs="?",
        const="flip",
        default="none",
        choices=TTA_MODES,
        help="test-time augmentation: flip (the default when given alone) averages each image with its "
        "mirror; flip_translate adds one-pixel shifts (6 views)",
    )
    parser.add_argument(
        "--corruptions",
        type=int,
        nargs="?",
        const=1000,
        default=0,
        metavar="N",
        help="also measure accuracy under common corruptions (CIFAR-10-C's definitions: 6 kinds x 5 severities) on "
        "the first N test images, 1000 when N is left out; each costs 30 predictions an image",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="where metrics.json and the plots go (default: the run directory, or the model file's folder)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from keras_cifar.data import load_cifar10
    from keras_cifar.errors import CheckpointError, ConfigError

    if args.corruptions < 0:
        raise ConfigError(f"--corruptions takes a number of test images (0 to skip), got {args.corruptions}")
    from keras_cifar.evaluation import report_run
    from keras_cifar.run import RunDir

    target = Path(args.target)
    if target.is_dir():
        record = RunDir(target).read_record()
        saved = record.config if record else {}
        model_path, out = RunDir(target).model_file, Path(args.out or target)
    elif target.is_file():
        saved, model_path, out = {}, target, Path(args.out or target.parent)
    else:
        raise CheckpointError(f"{target} is neither a run directory nor a model file")
    data = load_cifar10(args.data_dir or saved.get("data_dir"), args.source or saved.get("source", "auto"))
    limit = args.test_limit or saved.get("test_limit")
    out = RunDir(out)
    with out.lock("evaluate"):
        report_run(
            out,
            data.x_test[:limit],
            data.y_test[:limit],
            data.class_names,
            tta=args.tta,
            model_path=model_path,
            data_fingerprint=data.fingerprint,
            corruption_images=args.corruptions,
        )
    print(f"wrote {out / RunDir.METRICS}, confusion_matrix.png, reliability.png and mistakes.png")


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
