"""`python -m keras_cifar.train --arch inception`: train one model into a run directory."""

from __future__ import annotations

import argparse
import sys

from keras_cifar import cli


def parse_args(argv=None) -> argparse.Namespace:
    from keras_cifar.config import parse_train_args

    return parse_train_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from keras_cifar.models import available_models

    if args.list_archs:
        print("\n".join(available_models()))
        return
    from keras_cifar.config import resolve_config
    from keras_cifar.training import train

    run_dir = train(resolve_config(args))
    print(f"done: {run_dir}")


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
