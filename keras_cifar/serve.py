"""`python -m keras_cifar.serve --model exported_models/NAME`: the prediction API and web page on one port."""

from __future__ import annotations

import argparse
import socket
import sys

from keras_cifar import cli
from keras_cifar.export.convert import FORMATS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m keras_cifar.serve", description=__doc__)
    parser.add_argument("--model", required=True, help="an export folder written by `python -m keras_cifar.export`")
    parser.add_argument("--format", default=None, choices=list(FORMATS),
                        help="which exported file to serve (default: tflite-float32 if present, else savedmodel)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all; default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-upload-mb", type=float, default=5.0, help="largest accepted image file (default 5 MB)")
    parser.add_argument("--max-batch", type=int, default=32, help="most images per request (default 32)")
    parser.add_argument("--batch-window-ms", type=float, default=0.0,
                        help="wait this long for concurrent requests to share one model call (default 0: off; it "
                             "pays only when the model, not HTTP and image decoding, is the bottleneck)")
    return parser.parse_args(argv)


def check_port_free(host: str, port: int) -> None:
    from keras_cifar.errors import ConfigError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); is another server using it? "
                              "Choose another --port") from None


def main(argv=None) -> None:
    args = parse_args(argv)
    import uvicorn

    from keras_cifar.serving.app import create_app

    check_port_free(args.host, args.port)
    app = create_app(args.model, args.format, max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_batch=args.max_batch, batch_window_ms=args.batch_window_ms)
    print(f"serving {app.state.metadata['architecture']} ({app.state.format}) on http://{args.host}:{args.port}/",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
