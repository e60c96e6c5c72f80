"""`python -m tuning.launch --workers 2 --arch resnet18 --max-trials 8 ...`: one search as a chief and N workers on
this machine, over loopback.

Every flag it does not know is passed to `tuning.search` unchanged. The chief holds KerasTuner's oracle and trains
nothing; each worker asks it for trials until the search is done. Each process's output goes to
DIRECTORY/PROJECT/logs/<name>.log and, prefixed with its name, to this terminal.

A worker that dies before the search ends (killed, out of memory) is started again under the same
KERASTUNER_TUNER_ID, up to --max-restarts times: the oracle hands it back the trial it was running, which trains
again from the start. Without that the oracle would wait for the dead worker's trial forever.

The chief and workers never outlive the launcher: SIGTERM or SIGHUP stops them as Ctrl-C does, and on Linux
each is started with a parent-death signal, so even a launcher killed with SIGKILL takes them with it.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from keras_cifar import cli
from keras_cifar.errors import ConfigError, TrainingError

LOOPBACK = "127.0.0.1"
# KerasTuner's chief checks every 20 s whether the search is over.
CHIEF_GRACE_SECONDS = 30


def parse_args(argv=None):
    parser = cli.parser(
        prog="python -m tuning.launch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes, each training one trial at a time")
    parser.add_argument("--port", type=int, default=8470, help="the chief's port on 127.0.0.1")
    parser.add_argument("--max-restarts", type=int, default=3, help="times each dead worker is started again")
    parser.add_argument("--directory", default="runs/search", help="as for tuning.search")
    parser.add_argument("--project-name", default=None, help="as for tuning.search (default: --arch, or search)")
    return parser.parse_known_args(argv)


def main(argv=None) -> int:
    args, search_args = parse_args(argv)
    project = args.project_name or _flag_value(search_args, "--arch") or "search"
    try:
        return launch(
            search_args,
            workers=args.workers,
            port=args.port,
            directory=args.directory,
            project_name=project,
            max_restarts=args.max_restarts,
        )
    except _Stopped as stop:
        print(f"launch: stopped by {stop}; the chief and workers were stopped too. Re-run to continue", flush=True)
        return 128 + stop.signum


def check_port_free(ip: str, port: int) -> None:
    """Fail clearly now rather than let gRPC fail (or share the port: it binds with SO_REUSEPORT) later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Still fails on a port someone listens on, but not on the closed connections of a chief that just exited.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {ip} is already in use (another search's chief?); "
                    f"choose another with --port, or stop that process"
                ) from None
            raise ConfigError(f"cannot listen on {ip}:{port}: {exc.strerror}") from None


def launch(search_args, workers=2, port=8470, directory="runs/search", project_name="search", max_restarts=3) -> int:
    """Run the chief and `workers` workers until the chief exits; return the chief's exit status."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    check_port_free(LOOPBACK, port)
    logs = Path(directory) / project_name / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "tuning.search",
        *search_args,
        "--directory",
        str(directory),
        "--project-name",
        project_name,
    ]
    env = {**os.environ, "KERASTUNER_ORACLE_IP": LOOPBACK, "KERASTUNER_ORACLE_PORT": str(port)}
    # Workers share this machine's cores rather than each starting a thread per core and contending.
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for variable in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(variable, threads)
    _stop_on_signals()
    processes = {"chief": _start("chief", command, env, logs)}
    restarts = {}
    for i in range(workers):
        processes[f"tuner{i}"] = _start(f"tuner{i}", command, env, logs)
        restarts[f"tuner{i}"] = 0
    gave_up_at = None
    try:
        while processes["chief"].poll() is None:
            time.sleep(1)
            if (
                gave_up_at is None
                and any(v is None for v in restarts.values())
                and all(p.poll() is not None for n, p in processes.items() if n != "chief")
            ):
                gave_up_at = time.monotonic()
            if gave_up_at and time.monotonic() - gave_up_at > CHIEF_GRACE_SECONDS:
                raise TrainingError(
                    "a worker died more often than --max-restarts allows and the chief still waits "
                    "for its trial; re-run the same command to continue the search (that trial "
                    f"trains again). Logs: {logs}"
                )
            for name, status in [(n, p.poll()) for n, p in processes.items() if n != "chief"]:
                if status in (None, 0) or restarts[name] is None:
                    continue
                if restarts[name] >= max_restarts:
                    print(f"launch: {name} exited with status {status}; no restarts left", flush=True)
                    restarts[name] = None
                    continue
                restarts[name] += 1
                print(
                    f"launch: {name} exited with status {status} before the search ended; starting it again "
                    f"({restarts[name]}/{max_restarts}) to finish its trial",
                    flush=True,
                )
                processes[name] = _start(name, command, env, logs)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait()
    status = processes["chief"].returncode
    print(f"launch: chief exited with status {status}; logs in {logs}", flush=True)
    return status


class _Stopped(BaseException):
    """Raised by SIGTERM or SIGHUP so that `launch`'s `finally` stops the children, as it does on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on_signals() -> None:
    def stop(signum, frame):
        raise _Stopped(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)


def _start(name, command, env, logs: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        command,
        env={**env, "KERASTUNER_TUNER_ID": name, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=cli.dies_with_this_process(),
    )
    print(f"launch: {name} started, pid {process.pid}", flush=True)
    threading.Thread(target=_relay, args=(name, process, logs / f"{name}.log"), daemon=True).start()
    return process


def _relay(name, process, log_path: Path) -> None:
    """Copy a process's output to its log file and, prefixed, to this terminal."""
    with log_path.open("a") as log:
        for line in process.stdout:
            log.write(line)
            log.flush()
            print(f"[{name}] {line}", end="", flush=True)


def _flag_value(args, flag):
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
