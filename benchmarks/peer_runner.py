"""Run the peer's own training script, unchanged, on a CPU: `benchmarks/peer.py` starts this in a Python that has
PyTorch (never this package's dependency).

    TORCH_PYTHON benchmarks/peer_runner.py --script cifar10-airbench/legacy/airbench94.py --data cifar10.npz \
        --seed 0 --precision bfloat16 --out peer-s0.json

The script's file is executed as it is; only what a GPU script cannot do here is swapped under it:
- CUDA: `.cuda()` is a no-op, `torch.load` maps to the CPU, `torch.cuda.Event` times with `time.perf_counter`
  (the script's own timer, which stops before each per-epoch evaluation, stays the figure reported);
- precision: the script keeps its network in float16 (`.half()`), which CPUs do not train in; the network and
  images stay float32 and the whole run is under `torch.autocast("cpu", bfloat16)` where the CPU has bfloat16,
  plain float32 elsewhere. Its cache of bfloat16 weight copies is off: one context around the whole run would
  otherwise keep serving the first step's weights, and the net stays at chance (what that looked like:
  `results/cpu/peer-vs-fast-zen4/README.md`). The whitening filters are computed with autocast off, in the float32
  the script asks for;
- data: the script's `train.pt`/`test.pt` are written from this package's loader (the `.npz` given), so both
  sides read the same pixels; torchvision, which it imports for its download and `Normalize` only, is replaced
  by those two where it is not installed (PyPI's torchvision does not load beside the CPU build of torch);
- `torch.compile` is off (eager, as airbench94 runs; Inductor on a CPU needs a C++ toolchain at run time);
- one run with a seed instead of its 25 or 200 unseeded runs, and no warm-up run (it only warms the compiler).

Each epoch row the script prints is recorded with the share of the cores other processes used meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import runpy
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from keras_cifar.run import MachineShare, cpu_info  # noqa: E402  (stdlib-only module: no TensorFlow here)


class _Event:
    """`torch.cuda.Event(enable_timing=True)` on a CPU: synchronous work, so a wall-clock stamp is exact."""

    def __init__(self, *args, **kwargs):
        self.stamp = None

    def record(self, *args):
        self.stamp = time.perf_counter()

    def elapsed_time(self, end) -> float:
        return 1e3 * (end.stamp - self.stamp)


class _Normalize:
    """torchvision.transforms.Normalize for a batch of NCHW tensors (what the script calls it on)."""

    def __init__(self, mean, std):
        self.mean, self.std = torch.as_tensor(mean).view(-1, 1, 1), torch.as_tensor(std).view(-1, 1, 1)

    def __call__(self, images):
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)


def run_on_cpu() -> None:
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.half = lambda self: self
    torch.Tensor.half = lambda self, *args, **kwargs: self.float()
    torch.cuda.Event = _Event
    torch.cuda.synchronize = lambda *args, **kwargs: None
    load = torch.load
    torch.load = lambda path, *args, map_location=None, **kwargs: load(path, *args, map_location="cpu", **kwargs)
    torch.compile = lambda model=None, **kwargs: model if model is not None else (lambda fn: fn)
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or PyPI's build that does not load beside torch's CPU build
        vision = types.ModuleType("torchvision")
        vision.transforms = types.ModuleType("torchvision.transforms")
        vision.transforms.Normalize = _Normalize
        sys.modules.update({"torchvision": vision, "torchvision.transforms": vision.transforms})


def float32_whitening(peer: dict) -> None:
    """Run the scripts' whitening initialisers outside autocast, as on a GPU: they cast the patches to float32, but
    CPU autocast would still run the covariance matmul in bfloat16, whose rounding can turn its smallest eigenvalues
    negative and the filters, 1 / sqrt(eigenvalue + 5e-4), NaN: the run then trains at chance.
    """

    def exact(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            with torch.autocast("cpu", enabled=False):
                return function(*args, **kwargs)

        return run

    if "init_whitening_conv" in peer:  # airbench94: a module function that main calls
        peer["main"].__globals__["init_whitening_conv"] = exact(peer["init_whitening_conv"])
    if hasattr(peer.get("CifarNet"), "init_whiten"):  # airbench94_muon: a method of its net
        peer["CifarNet"].init_whiten = exact(peer["CifarNet"].init_whiten)


def write_script_data(npz: Path, folder: Path) -> None:
    """The `{images, labels, classes}` files the script would have downloaded, from the same arrays ours trains on."""
    arrays = np.load(npz)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        torch.save(
            {
                "images": torch.from_numpy(arrays[f"x_{split}"]),
                "labels": torch.from_numpy(arrays[f"y_{split}"].astype(np.int64)),
                "classes": [str(name) for name in arrays["classes"]],
            },
            folder / f"{split}.pt",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", type=Path, required=True, help="the peer's .py file, as fetched")
    parser.add_argument("--data", type=Path, required=True, help=".npz of x_train, y_train, x_test, y_test, classes")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--precision", choices=("bfloat16", "float32"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON of every epoch row and the final accuracy")
    args = parser.parse_args()

    work = args.out.parent / f".{args.out.stem}-work"
    write_script_data(args.data, work / "cifar10")
    os.chdir(work)  # the script reads ./cifar10/{train,test}.pt and writes ./logs
    run_on_cpu()
    sys.argv = [str(args.script.resolve())]
    peer = runpy.run_path(sys.argv[0], run_name="peer")
    float32_whitening(peer)
    loader = peer["CifarLoader"].__init__
    if "gpu" in inspect.signature(loader).parameters:  # airbench94's loader names device 0, which a CPU build refuses
        names = loader.__code__.co_varnames[: loader.__code__.co_argcount]
        defaults = dict(zip(names[-len(loader.__defaults__) :], loader.__defaults__), gpu="cpu")
        loader.__defaults__ = tuple(defaults.values())

    rows, share = [], MachineShare()
    print_row = peer["print_training_details"]

    def record_row(variables, is_final_entry):
        print_row(variables, is_final_entry)
        seconds = variables.get("total_time_seconds", variables.get("time_seconds"))
        accuracy = "tta_val_acc" if variables["epoch"] == "eval" else "val_acc"
        rows.append(
            {
                "epoch": variables["epoch"],
                "time_seconds": seconds,
                "others_cpu": share.others(),
                accuracy: variables.get(accuracy),
            }
        )

    peer["main"].__globals__["print_training_details"] = record_row
    torch.manual_seed(args.seed)
    peer["print_columns"](peer["logging_columns_list"], is_head=True)
    takes_model = "model" in inspect.signature(peer["main"]).parameters
    bfloat16 = args.precision == "bfloat16"
    autocast = torch.autocast("cpu", torch.bfloat16, cache_enabled=False) if bfloat16 else contextlib.nullcontext()
    started = time.perf_counter()
    with autocast:
        if takes_model:  # airbench94_muon builds its net once, outside main
            model = peer["CifarNet"]().to(memory_format=torch.channels_last)
            accuracy = peer["main"](0, model)
        else:
            accuracy = peer["main"](0)
    epochs = [row for row in rows if row["epoch"] != "eval"]
    payload = {
        "script": args.script.name,
        "seed": args.seed,
        "precision": args.precision,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_info(),
        "rows": rows,
        "epochs": len(epochs),
        # airbench94 trains 9.9 epochs (its last epoch is partial); airbench94_muon has no `hyp` and whole epochs
        "planned_epochs": peer.get("hyp", {}).get("opt", {}).get("train_epochs", len(epochs)),
        "training_seconds": epochs[-1]["time_seconds"],
        "seconds_with_tta": rows[-1]["time_seconds"],
        "tta_accuracy": float(accuracy),
        "wall_seconds": time.perf_counter() - started,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
