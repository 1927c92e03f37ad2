"""`python -m parasim` runs the CLI."""

from parasim.cli.launch import main

main()
