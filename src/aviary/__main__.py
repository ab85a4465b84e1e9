"""`python -m aviary` runs the command-line interface."""

from aviary.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
