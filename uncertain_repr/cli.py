"""The ``uncertain-repr`` command line. Each subcommand lives in ``uncertain_repr.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, List, Optional

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


# Errors a user can act on: reported in one line, no traceback. OSError covers missing files, full or
# read-only disks, permissions and another run holding the output's lock; EOFError a truncated file.
USER_ERRORS = (ValueError, TypeError, LookupError, ImportError, OSError, EOFError)
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
# How to continue after Ctrl-C, where rerunning the same command is not enough.
RESUME_HINTS = {"train": "rerun the same command with --resume to continue"}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: parse ``argv`` and run the chosen command (errors as :func:`run_command` reports them)."""
    args = build_parser().parse_args(argv)
    return run_command(args.command, lambda: args.run(args), resuming=lambda: bool(getattr(args, "resume", False)))


def run_command(
    command: str, run: Callable[[], Optional[int]], *, resuming: Callable[[], bool] = lambda: False
) -> int:
    """Run ``command``'s ``run()`` and return its exit status; also what ``python -m uncertain_repr.train`` uses.

    User errors (:data:`USER_ERRORS`) exit with status 2 and one line on stderr; Ctrl-C exits with 130
    and says how to resume (``resuming()``: the run was started with ``--resume``).
    """
    try:
        return int(run() or 0)
    except KeyboardInterrupt:
        hint = "rerun the same command to resume"
        if not resuming():
            hint = RESUME_HINTS.get(command, hint)
        print(f"uncertain-repr {command}: interrupted; {hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as err:
        message = str(err) if isinstance(err, (ValueError, TypeError, OSError)) else f"{type(err).__name__}: {err}"
        if isinstance(err, EOFError):
            message += " (a file ended early: truncated?)"
        print(f"uncertain-repr {command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
