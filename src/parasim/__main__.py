"""`python -m parasim` runs the CLI."""

from parasim.cli.main import main

main()
