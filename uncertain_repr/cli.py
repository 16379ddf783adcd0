"""The ``uncertain-repr`` command line. Each subcommand lives in ``uncertain_repr.commands``."""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import sys
from typing import Any, Callable, Iterable, List, Optional, Sequence

from .version import __version__

COMMANDS = ("predict", "benchmark", "convert", "cache", "train")


def closest(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate most similar to ``word`` (``difflib``), or ``None`` if none is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def join_bracket_lists(argv: Sequence[str]) -> List[str]:
    """Re-join a bracket list the shell split apart: ``['--x=[a,', 'b,', 'c]']`` -> ``['--x=[a, b, c]']``."""
    out: List[str] = []
    open_list = False
    for token in argv:
        if open_list:
            out[-1] += " " + token
        else:
            out.append(token)
        open_list = out[-1].count("[") > out[-1].count("]")
    return out


def shown_default(value: Any) -> str:
    """A default as ``--help`` shows it, in the form the flag accepts: ``true``/``false``, a list
    space-separated (``nargs="+"``), a dict as JSON, anything else as ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def with_default(text: str, default: Any) -> str:
    """``text`` + `` (default: VALUE)``, unless ``text`` already says its default (in words, e.g.
    ``(default: --batch-size)``) or there is none to show (``None``, ``SUPPRESS``, empty)."""
    unset = default is None or default is argparse.SUPPRESS or (isinstance(default, (str, list, tuple, dict)) and not default)
    if "default:" in text or unset:
        return text
    return f"{text} (default: {shown_default(default).replace('%', '%%')})"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows each option's default once: appended by :func:`with_default` to the help of every
    option that takes a value (a flag such as ``--json`` has none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if action.nargs == 0 else with_default(text, action.default)


class SuggestingParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that re-joins shell-split bracket lists and rejects an unknown flag
    with the closest accepted one (``unknown flag --lr-bas; did you mean --lr-base?``); its
    ``--help`` shows each default once (:class:`DefaultsHelpFormatter`)."""

    def __init__(self, *args: Any, formatter_class: type = DefaultsHelpFormatter, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = join_bracket_lists(sys.argv[1:] if args is None else list(args))
        parsed, extra = super().parse_known_args(args, namespace)
        unknown = [a for a in extra if a.startswith("-") and len(a) > 1 and not a[1:2].isdigit()]
        if unknown:
            name = unknown[0].split("=", 1)[0]
            hint = closest(name, (s for action in self._actions for s in action.option_strings))
            self.error(f"unknown flag {name}" + (f"; did you mean {hint}?" if hint else ""))
        return parsed, extra


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="uncertain-repr", description="Uncertainty-aware pretrained image representations."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=SuggestingParser)
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
RESUME_HINTS = {
    "train": "rerun the same command with --resume to continue",
    "predict": "rerun the same command: predict starts over (it keeps no partial results)",
}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: parse ``argv`` and run the chosen command (errors as :func:`run_command` reports them)."""
    args = build_parser().parse_args(argv)
    return run_command(args.command, lambda: args.run(args), resuming=bool(getattr(args, "resume", False)))


def run_command(command: str, run: Callable[[], Optional[int]], *, resuming: bool = False) -> int:
    """Run ``command``'s ``run()`` and return its exit status; also what ``python -m uncertain_repr.train`` uses.

    User errors (:data:`USER_ERRORS`) exit with status 2 and one line on stderr; Ctrl-C exits with 130
    and says how to resume (``resuming``: the run was started with ``--resume``).
    """
    try:
        return int(run() or 0)
    except KeyboardInterrupt:
        hint = "rerun the same command to resume"
        if not resuming:
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
