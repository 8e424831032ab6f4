"""Run the command line as `python -m newsletter`."""

from newsletter.cli import main

main()
