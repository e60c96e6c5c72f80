"""Train-step images/second of the same network in Keras/TensorFlow and in PyTorch, on this CPU.

The PyTorch side is a twin written here, for per-kernel breakdowns: it trails the real peer (792 img/s against
about 1,100 for airbench94's whole epoch on an idle AMX machine, results/intel-amx-2026-12-03/). Compare speed
with the peer's own script: benchmarks/peer.py.

The README compares this project's CPU speed with PyTorch's; this script measures that gap in one run, for
float32 and bfloat16, and prints what either engine could be doing differently (oneDNN, thread counts, the
OpenMP/oneDNN environment) next to the numbers.

    python benchmarks/engine_gap.py --batch-size 256 --steps 10 --warmup 3 \\
        --torch-python torch-venv/bin/python
    python benchmarks/engine_gap.py --arch airbench --batch-size 1024 --steps 3 --warmup 2 \\
        --precision bfloat16 --onednn-breakdown --torch-python torch-venv/bin/python

Run it with the project's interpreter. The Keras side is the project's own net, built by `compile_model` as
training builds it; each precision runs in its own process because Keras's dtype policy is process-wide.
The PyTorch side is a twin of that net written below, run by re-invoking this file with `--torch-python`
(default: this interpreter, if torch imports there), so Keras and PyTorch may live in different
environments. The Keras code here never imports torch and the PyTorch code never imports Keras or
TensorFlow. Both sides time synthetic batches (no input pipeline) and report batch size over the median
step time after the warm-up steps.

`--onednn-breakdown` runs both sides with `ONEDNN_VERBOSE=1` and prints the milliseconds per timed step spent
in each oneDNN primitive (convolutions by shape and direction), side by side: the kernels the two engines
share, and which of them differ. TensorFlow then runs with one inter-op thread, so its kernels do not overlap
and their times add up as PyTorch's do; logging slows both sides a little, so take img/s from a plain run.

Measure on an idle machine: the header prints the load average because other work on the cores hurts
PyTorch's OpenMP threads (which wait for each other at every parallel region) far more than TensorFlow's
thread pool, so a busy CPU exaggerates the gap.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

from train_throughput import TIMED_MARK, images_per_second, measure

SCRIPT = os.path.abspath(__file__)
KERAS_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
TORCH_ARCHS = ("airbench", "resnet18", "vgg16")
TORCH_MISSING = 3  # exit status of a PyTorch child whose interpreter has no torch
THREAD_ENV = ("TF_ENABLE_ONEDNN_OPTS", "OMP_NUM_THREADS")
THREAD_ENV_PREFIXES = ("OMP_", "KMP_", "MKL_", "DNNL_", "ONEDNN_", "TF_NUM_")


def thread_env() -> dict:
    """oneDNN/OpenMP variables that change kernels or thread counts: candidate causes of a gap."""
    env = {name: os.environ.get(name) for name in THREAD_ENV}
    env.update({k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_ENV_PREFIXES)})
    return env


# ---------------------------------------------------------------- PyTorch side (imports torch only)


def torch_net(arch):
    """The PyTorch twin of the Keras net `arch`, in channels_last like Keras's NHWC tensors.

    Layers that Keras pins to float32 under mixed precision (input normalisation, airbench's whitening conv,
    the logits) run outside autocast here, so both engines do the same work in the same precision.
    """
    import torch
    from torch import nn

    class Normalize(nn.Module):
        """Per-channel CIFAR-10 standardisation of 0–255 pixels, which the Keras nets do in-model."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1) * 255)

        def forward(self, x):
            return (x - self.mean) / self.std

    class Scale(nn.Module):
        """airbench's fixed logit temperature."""

        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    class Float32(nn.Sequential):
        """Layers run outside autocast, as Keras runs layers built with dtype="float32"."""

        def forward(self, x):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())

    class BasicBlock(nn.Module):
        """ResNet's two 3×3 convs plus a shortcut, projected by a 1×1 conv when the shape changes."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.residual = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
            self.shortcut = (
                nn.Identity()
                if stride == 1 and cin == cout
                else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            )

        def forward(self, x):
            return torch.relu(self.residual(x) + self.shortcut(x))

    def shift_only_bn(channels):
        """airbench's batch norm: learnt shift, frozen scale (Keras: `scale=False`)."""
        bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
        bn.weight.requires_grad_(False)
        return bn

    def conv_group(cin, cout):
        """conv → max-pool → BN → GELU → conv → BN → GELU, as in `keras_cifar.models.airbench`."""
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            shift_only_bn(cout),
            nn.GELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            shift_only_bn(cout),
            nn.GELU(),
        ]

    def airbench():
        whiten = nn.Conv2d(3, 24, 2, bias=True)
        whiten.weight.requires_grad_(False)  # filled from data before training, then frozen
        head = Float32(nn.Flatten(), nn.Linear(256, 10, bias=False), Scale(1 / 9))
        return nn.Sequential(
            Float32(Normalize(), whiten),
            nn.GELU(),
            *conv_group(24, 64),
            *conv_group(64, 256),
            *conv_group(256, 256),
            nn.MaxPool2d(3),
            head,
        )

    def resnet18():
        """CIFAR ResNet-18: 3×3 stem, BasicBlock stages [2, 2, 2, 2], as in `keras_cifar.models.resnet`."""
        blocks, cin = [], 64
        for cout, stride in zip((64, 128, 256, 512), (1, 2, 2, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        return nn.Sequential(
            Float32(Normalize()),
            nn.Conv2d(3, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            *blocks,
            nn.AdaptiveAvgPool2d(1),
            Float32(nn.Flatten(), nn.Linear(512, 10)),
        )

    def vgg16():
        """CIFAR VGG-16: thirteen 3×3 conv-BN-ReLU in five pooled stages, one linear layer, as in
        `keras_cifar.models.vgg`."""
        layers, cin = [], 3
        for stage in ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)):
            for cout in stage:
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(Float32(Normalize()), *layers, Float32(nn.Flatten(), nn.Linear(512, 10)))

    nets = {"airbench": airbench, "resnet18": resnet18, "vgg16": vgg16}
    return nets[arch]().to(memory_format=torch.channels_last)


def torch_rate(arch, precision, batch_size, steps, warmup) -> float:
    """Train-step images/second of the PyTorch twin: airbench's Nesterov SGD and smoothed cross-entropy."""
    import torch

    net = torch_net(arch).train()
    optimizer = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.85, nesterov=True, weight_decay=5e-4
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(batch_size, 3, 32, 32, generator=generator) * 255).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), generator=generator)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()

    return images_per_second(step, batch_size, steps, warmup)


def torch_info() -> dict:
    """What decides PyTorch's CPU speed: version, oneDNN, the kernels' instruction set, threads."""
    import torch

    return {
        "version": torch.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "env": thread_env(),
    }


def torch_child(args) -> None:
    """Child process on the PyTorch interpreter: one number, or the info dict as JSON."""
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(TORCH_MISSING)
    if args.torch_info:
        print(json.dumps(torch_info()))
    else:
        print(torch_rate(args.arch, args.torch_one, args.batch_size, args.steps, args.warmup))


# ---------------------------------------------------------------- Keras side and driver (never imports torch)


def keras_info() -> dict:
    """TensorFlow's counterpart of `torch_info`; thread counts of 0 mean TF's default, one per CPU."""
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    return {
        "version": tf.__version__,
        "onednn": _pywrap_util_port.IsMklEnabled(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "env": thread_env(),
    }


def run_child(python, args, env=None) -> tuple[subprocess.CompletedProcess | None, str]:
    """Runs this file under `python`; returns the process and, if it failed, why in one line."""
    try:
        child = subprocess.run(
            [python, SCRIPT, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
        )
    except OSError as error:
        return None, str(error)
    if child.returncode == TORCH_MISSING:
        return child, "PyTorch not installed: pip install torch==2.13.0"
    if child.returncode:
        lines = child.stderr.strip().splitlines()
        return child, lines[-1] if lines else f"exit status {child.returncode}"
    return child, ""


def onednn_breakdown(stdout: str, steps: int) -> collections.Counter:
    """Milliseconds per timed step in each oneDNN primitive, from the `ONEDNN_VERBOSE=1` exec lines."""
    totals = collections.Counter()
    for line in stdout.split(TIMED_MARK, 1)[-1].splitlines():
        fields = line.split(",")
        if fields[0] != "onednn_verbose" or "exec" not in fields:
            continue
        at = fields.index("exec")
        kind, direction, shape = fields[at + 2], fields[at + 4], fields[-2]
        totals[f"{kind} {direction} {shape}" if kind == "convolution" else kind] += float(fields[-1]) / steps
    return totals


def print_breakdown(breakdowns: dict) -> None:
    """One row per primitive, the engines side by side, largest first; a missing entry is a kernel one engine
    does not call through oneDNN."""
    names = sorted(set().union(*breakdowns.values()), key=lambda k: -max(b.get(k, 0) for b in breakdowns.values()))
    print(f"{'oneDNN primitive, ms per step':<90}" + "".join(f"{side:>9}" for side in breakdowns))
    for name in [*names, "total"]:
        cells = [sum(b.values()) if name == "total" else b.get(name) for b in breakdowns.values()]
        print(f"{name[:90]:<90}" + "".join("        -" if c is None else f"{c:9.1f}" for c in cells))


def format_env(env) -> str:
    """`NAME=value` pairs, unset ones included so their absence is visible."""
    return ", ".join(f"{k}={'unset' if v is None else v}" for k, v in env.items())


def print_header(environment, keras, torch_python, torch) -> None:
    """CPU, both engines' versions, oneDNN, threads and environment: what the reader needs to explain a gap."""
    cpu = environment["cpu"]
    print(f"# {cpu['model']}, {cpu['cores']} cores, flags {','.join(cpu['flags'])}")
    print(
        f"# keras {environment['versions']['keras']}, tensorflow {keras['version']}: "
        f"oneDNN {'on' if keras['onednn'] else 'off'}, intra-op threads {keras['intra_op_threads']}, "
        f"inter-op threads {keras['inter_op_threads']} (0 = TF default); {format_env(keras['env'])}"
    )
    if torch:
        print(
            f"# torch {torch['version']} ({torch_python}): mkldnn available {torch['mkldnn']}, "
            f"kernels {torch['cpu_capability']}, threads {torch['threads']}, inter-op threads "
            f"{torch['interop_threads']}; {format_env(torch['env'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--arch", default="airbench", help="Keras registry name; PyTorch twins exist for " + ", ".join(TORCH_ARCHS)
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    parser.add_argument("--torch-python", default=sys.executable, help="interpreter with torch (default: this one)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument(
        "--onednn-breakdown",
        action="store_true",
        help="also print each side's time per oneDNN primitive (runs with ONEDNN_VERBOSE=1)",
    )
    parser.add_argument("--keras-one", metavar="PRECISION", help=argparse.SUPPRESS)
    parser.add_argument("--torch-one", metavar="PRECISION", help=argparse.SUPPRESS)
    parser.add_argument("--torch-info", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_one or args.torch_info:
        torch_child(args)
        return
    if args.keras_one:
        print(measure(args.arch, args.batch_size, 1.0, "off", KERAS_POLICY[args.keras_one], args.steps, args.warmup))
        return

    from keras_cifar.training.host import environment

    env, keras_side, torch_side = environment(), keras_info(), None
    skipped = f"no PyTorch twin of {args.arch} in this script" if args.arch not in TORCH_ARCHS else ""
    if not skipped:
        child, skipped = run_child(args.torch_python, ["--torch-info"])
        torch_side = None if skipped else json.loads(child.stdout)
    print_header(env, keras_side, args.torch_python, torch_side)
    if skipped:
        print(f"# PyTorch side skipped: {skipped}")
    print(
        f"# {args.arch}, batch {args.batch_size}, median of {args.steps} train steps after {args.warmup} warm-up; "
        f"1-min load average {os.getloadavg()[0]:.2f}"
    )

    common = [
        "--arch",
        args.arch,
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    verbose = {"ONEDNN_VERBOSE": "1"} if args.onednn_breakdown else {}
    sides = [("keras", sys.executable, "--keras-one", {**verbose, "TF_NUM_INTEROP_THREADS": "1"} if verbose else {})]
    if torch_side:
        sides.append(("torch", args.torch_python, "--torch-one", verbose))
    print(f"{'network':<10} {'framework':<10} {'precision':<10} {'img/s':>8} {'torch/keras':>12}")
    results = []
    for precision in args.precision.split(","):
        rates, breakdowns = {}, {}
        for framework, python, flag, child_env in sides:
            child, error = run_child(python, [flag, precision, *common], child_env)
            if error:
                print(f"{args.arch:<10} {framework:<10} {precision:<10} failed: {error}", flush=True)
                continue
            rates[framework] = float(child.stdout.strip().splitlines()[-1])
            ratio = rates[framework] / rates["keras"] if framework == "torch" and "keras" in rates else None
            results.append(
                {
                    "network": args.arch,
                    "framework": framework,
                    "precision": precision,
                    "images_per_second": rates[framework],
                    "torch_over_keras": ratio,
                }
            )
            print(
                f"{args.arch:<10} {framework:<10} {precision:<10} {rates[framework]:8.1f} "
                f"{'' if ratio is None else f'{ratio:.2f}':>12}",
                flush=True,
            )
            if verbose:
                breakdowns[framework] = onednn_breakdown(child.stdout, args.steps)
                results[-1]["onednn_ms_per_step"] = dict(breakdowns[framework])
        if breakdowns:
            print_breakdown(breakdowns)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "environment": env,
                    "keras": keras_side,
                    "torch": torch_side,
                    "torch_python": args.torch_python,
                    "batch_size": args.batch_size,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "results": results,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
