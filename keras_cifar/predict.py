"""`python -m keras_cifar.predict PATH... --model MODEL`: classify image files with an export folder, a run directory
or a `.keras` file."""

from __future__ import annotations

import argparse
import json
import sys

from keras_cifar import cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.parser(prog="python -m keras_cifar.predict", description=__doc__)
    parser.add_argument("paths", nargs="+", help="image files (PNG, JPEG, WebP, GIF, BMP) or folders of them")
    cli.add_model_arguments(parser, "run")
    parser.add_argument("--top-k", type=int, default=3, help="how many classes to show per image (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    parser.add_argument(
        "--max-file-mb",
        type=float,
        default=None,
        help="skip (as failed) files larger than this without reading them (default 65: any image "
        "within the 4096x4096-pixel limit fits, even uncompressed)",
    )
    return parser.parse_args(argv)


def read_file(path, max_bytes: int) -> bytes:
    """A file's bytes, refused from its size before it is read (and never more than `max_bytes` read)."""
    from keras_cifar.serving.images import ImageError

    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(
                f"{path}: the file is {size:,} bytes, more than the {max_bytes:,} accepted (--max-file-mb)"
            )
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ImageError(f"{path}: the file grew past the {max_bytes:,} bytes accepted while it was read")
    return data


def main(argv=None) -> int:
    args = parse_args(argv)
    from keras_cifar.errors import ConfigError
    from keras_cifar.export.runtime import open_model, top_k
    from keras_cifar.serving.images import MAX_FILE_BYTES, ImageError, check_input_shape, decode_image, image_files

    if not 1 <= args.top_k <= 1000:
        raise ConfigError(f"--top-k must be a positive number of classes, got {args.top_k}")
    if args.max_file_mb is not None and not args.max_file_mb > 0:
        raise ConfigError(f"--max-file-mb must be positive, got {args.max_file_mb}")
    max_bytes = int(args.max_file_mb * 2**20) if args.max_file_mb else MAX_FILE_BYTES
    predictor, fmt, metadata = open_model(args.model, args.format)
    files = image_files(args.paths)
    check_input_shape(metadata["input_shape"])
    labels = metadata["labels"]
    classified, failures = 0, 0
    for path in files:  # each answer is printed as soon as it is known: one bad file costs only its own line
        try:
            image, size = decode_image(read_file(path, max_bytes), str(path))
        except ImageError as exc:
            failures += 1
            print(json.dumps({"file": str(path), "error": str(exc)}) if args.json else f"error: {exc}", file=sys.stderr)
            continue
        row = {
            "file": str(path),
            "width": size[0],
            "height": size[1],
            "top_k": top_k(predictor.predict(image[None])[0], labels, min(args.top_k, len(labels))),
        }
        classified += 1
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            guesses = "  ".join(f"{g['label']} {g['probability']:.1%}" for g in row["top_k"])
            print(f"{row['file']} ({row['width']}x{row['height']}): {guesses}", flush=True)
    if not args.json:
        print(
            f"{classified} image(s) classified by {metadata['architecture']} ({fmt}), resized to 32x32 "
            f"(centre square, Lanczos){f'; {failures} failed' if failures else ''}",
            file=sys.stderr,
        )
    return 1 if failures else 0


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
