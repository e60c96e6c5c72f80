"""`python -m keras_cifar.serve --model MODEL`: the prediction API and web page on one port, for an export folder, a
run directory or a `.keras` file."""

from __future__ import annotations

import argparse
import socket
import sys

from keras_cifar import cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.parser(prog="python -m keras_cifar.serve", description=__doc__)
    cli.add_model_arguments(parser, "serve")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all; default loopback)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-upload-mb", type=float, default=5.0, help="largest accepted image file (default 5 MB)")
    parser.add_argument("--max-batch", type=int, default=32, help="most images per request (default 32)")
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=0.0,
        help="wait this long for concurrent requests to share one model call (default 0: off; it "
        "pays only when the model, not HTTP and image decoding, is the bottleneck)",
    )
    parser.add_argument(
        "--decode-workers",
        type=int,
        default=None,
        help="threads decoding images and parsing JSON at once (default: the cores, at most 4)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=32,
        help="API requests received or answered at once; more get 503 (default 32)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=128,
        help="open connections at once; more get 503 from uvicorn (default 128)",
    )
    return parser.parse_args(argv)


def check_limits(args) -> None:
    from keras_cifar.errors import ConfigError

    for name in ("max_batch", "max_in_flight", "max_connections"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.decode_workers is not None and args.decode_workers < 1:
        raise ConfigError(f"--decode-workers must be at least 1, got {args.decode_workers}")
    if not args.max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0-65535, got {args.port}")


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound with SO_REUSEADDR: a restarted server gets its port back at once, even while
    connections of the previous one linger in TIME_WAIT (the kernel keeps those for a minute)."""
    from keras_cifar.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is another server using it? Choose another --port"
        ) from None
    return sock


def main(argv=None) -> None:
    args = parse_args(argv)
    check_limits(args)
    cli.require_extra("serve", "fastapi", "uvicorn", "multipart", "prometheus_client")
    import uvicorn

    from keras_cifar.serving.app import DEFAULT_DECODE_WORKERS, create_app

    app = create_app(
        args.model,
        args.format,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        decode_workers=args.decode_workers or DEFAULT_DECODE_WORKERS,
        max_in_flight=args.max_in_flight,
    )
    sock = listening_socket(args.host, args.port)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {app.state.metadata['architecture']} ({app.state.format}) on http://{host}:{port}/", flush=True)
    config = uvicorn.Config(app, log_level="warning", limit_concurrency=args.max_connections)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
