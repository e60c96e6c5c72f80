"""`python -m keras_cifar.train --arch inception`: train one model into a run directory."""

from __future__ import annotations

import argparse
import sys

from keras_cifar import cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m keras_cifar.train", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from keras_cifar.config import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--list-archs", action="store_true", help="print the architecture names and exit")
    return parser.parse_args(argv)


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
