"""``uncertain-repr train ...``: train an uncertainty method (flags as the original train.py)."""

from __future__ import annotations

import argparse
import sys
import warnings

HELP = "train an uncertainty method (e.g. pred-net on cached embeddings of a frozen backbone)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.config import add_arguments as add_train_arguments

    add_train_arguments(parser)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"uncertain-repr train: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from .._validation import check_device
    from ..train.config import config_from_args

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _one_line_warning
        config = config_from_args(args)
        if config.device:
            check_device(config.device, name="--device")
        if args.dry_run:
            from ..train.dry_run import dry_run

            print(dry_run(config).summary)
            return 0
        from ..train.launch import report, run as run_training

        result = run_training(config)
    print(report(result))
    return 0
