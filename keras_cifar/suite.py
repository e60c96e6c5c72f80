"""`python -m keras_cifar.suite --archs vgg16,resnet18 --seeds 3 --out suites/NAME [train flags]`: train each
architecture and seed into one folder, then build the comparison report. Re-run the same command after a
kill: finished runs are kept, the interrupted one continues from its last epoch, the rest follow.

Each run is its own `python -m keras_cifar.train` process, as if it ran alone: nothing a finished run left in
memory or threads can slow the next one's timed steps (a `--time-budget` is fitted to them).

Any training flag applies to every run, e.g. `--time-budget 10 --width-multiplier 0.5` for an equal
wall-clock budget per architecture at half width.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from keras_cifar import cli


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = cli.parser(
        prog="python -m keras_cifar.suite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--archs",
        required=True,
        help="comma-separated architectures (see --list-archs of train) or groups: classic (the seven "
        "classic nets), fast (airbench, resnet9)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per architecture: 0, 1, ... (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="suite folder: runs/ and report/ go inside")
    parser.add_argument("--note", default=None, help="a line for the report (e.g. what budget and width)")
    return parser.parse_known_args(argv)


def main(argv=None) -> None:
    args, train_flags = parse_args(argv)
    from keras_cifar.config import parse_train_args, resolve_config
    from keras_cifar.errors import ConfigError, TrainingError
    from keras_cifar.evaluation.compare import build_report
    from keras_cifar.models import expand_names
    from keras_cifar.run import RunDir

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    taken = {"--arch", "--seed", "--run-dir"} & {flag.split("=")[0] for flag in train_flags}
    if taken:
        raise ConfigError(f"the suite sets {', '.join(sorted(taken))} itself; use --archs/--seeds/--out")
    archs = expand_names(args.archs)
    # Every configuration is resolved before the first run starts, so a typo fails now, not hours later.
    plan = []
    for arch in archs:
        for seed in range(args.seeds):
            run_dir = args.out / "runs" / f"{arch}-s{seed}"
            run_argv = ["--arch", arch, "--seed", str(seed), "--run-dir", str(run_dir), *train_flags]
            resolve_config(parse_train_args(run_argv))
            plan.append((run_dir, run_argv))
    for number, (run_dir, run_argv) in enumerate(plan, start=1):
        if RunDir(run_dir).is_finished():
            print(f"[{number}/{len(plan)}] {run_dir.name}: finished earlier, kept", flush=True)
            continue
        print(f"[{number}/{len(plan)}] {run_dir.name}", flush=True)
        status = subprocess.run(
            [sys.executable, "-m", "keras_cifar.train", *run_argv], preexec_fn=cli.dies_with_this_process()
        ).returncode
        if status:
            raise TrainingError(f"{run_dir.name} stopped with exit status {status}; its output is above")
    report = build_report(
        [run_dir for run_dir, _ in plan],
        args.out / "report",
        note=args.note or f"`python -m keras_cifar.suite {' '.join(argv or sys.argv[1:])}`",
    )
    print(f"wrote {report / 'report.md'} and {report / 'report.html'}")


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
