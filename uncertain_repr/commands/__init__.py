"""Subcommands of the ``uncertain-repr`` command line; each imports its heavy dependencies in ``run``."""
