"""The `landscape` group with every command registered: what the CLI reference documents (the
entry point registers them the same way, through `commands()`)."""

from landscape.cli import commands

cli = commands()
