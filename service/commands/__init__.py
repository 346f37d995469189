"""Subcommands of the `symopt` command line."""
