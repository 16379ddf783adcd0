"""The ``uncertain-repr`` command line. Each subcommand lives in ``uncertain_repr.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .version import __version__

COMMANDS = ("predict", "benchmark", "convert", "cache", "train")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="uncertain-repr", description="Uncertainty-aware pretrained image representations."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name}", __package__)
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__.splitlines()[0])
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: parse ``argv`` and run the chosen command; errors exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"uncertain-repr {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
