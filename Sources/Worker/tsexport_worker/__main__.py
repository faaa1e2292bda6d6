"""`python -u -m tsexport_worker serve|attach|zygote`: serve the protocol (serve.py), directly or through a warm
zygote (runtime/warm.py)."""

from __future__ import annotations

import argparse
import sys

from .serve import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsexport_worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="speak the JSON-lines protocol on stdin/stdout")
    for name, text in (("attach", "serve through a warm zygote (start one when none answers)"),
                       ("zygote", "import torch and transformers once, fork a worker per caller")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--dir", required=True, help="the private folder of the sockets")
        command.add_argument("--idle", type=int, required=True, help="seconds without a caller before it exits")
        if name == "zygote":
            command.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if args.command == "attach":
        from .runtime.warm import attach

        return attach(args.dir, args.idle)
    if args.command == "zygote":
        from .runtime.warm import zygote

        return zygote(args.dir, args.key, args.idle)
    return serve()


if __name__ == "__main__":
    sys.exit(main())
