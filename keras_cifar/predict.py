"""`python -m keras_cifar.predict PATH... --model exported_models/NAME`: classify image files with an exported model."""

from __future__ import annotations

import argparse
import json
import sys

from keras_cifar import cli
from keras_cifar.export.convert import FORMATS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m keras_cifar.predict", description=__doc__)
    parser.add_argument("paths", nargs="+", help="image files (PNG, JPEG, WebP, GIF, BMP) or folders of them")
    parser.add_argument("--model", required=True, help="an export folder written by `python -m keras_cifar.export`")
    parser.add_argument("--format", default=None, choices=list(FORMATS),
                        help="which exported file to run (default: tflite-float32 if present, else savedmodel)")
    parser.add_argument("--top-k", type=int, default=3, help="how many classes to show per image (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    return parser.parse_args(argv)



def main(argv=None) -> int:
    args = parse_args(argv)
    from keras_cifar.errors import ConfigError
    from keras_cifar.export.runtime import open_export, top_k
    from keras_cifar.serving.images import ImageError, decode_image, image_files

    if not 1 <= args.top_k <= 1000:
        raise ConfigError(f"--top-k must be a positive number of classes, got {args.top_k}")
    predictor, fmt, metadata = open_export(args.model, args.format)
    labels = metadata["labels"]
    rows, failures = [], 0
    for path in image_files(args.paths):
        try:
            image, size = decode_image(path.read_bytes(), str(path))
        except ImageError as exc:
            failures += 1
            print(json.dumps({"file": str(path), "error": str(exc)}) if args.json else f"error: {exc}", file=sys.stderr)
            continue
        rows.append({"file": str(path), "width": size[0], "height": size[1],
                     "top_k": top_k(predictor.predict(image[None])[0], labels, min(args.top_k, len(labels)))})
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            guesses = "  ".join(f"{g['label']} {g['probability']:.1%}" for g in row["top_k"])
            print(f"{row['file']} ({row['width']}x{row['height']}): {guesses}")
    if not args.json:
        print(f"{len(rows)} image(s) classified by {metadata['architecture']} ({fmt}), resized to 32x32 "
              f"(centre square, Lanczos){f'; {failures} failed' if failures else ''}", file=sys.stderr)
    return 1 if failures else 0


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
