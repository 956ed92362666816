"""`python -m pipeline` runs the `iqa` command line."""

from pipeline.cli import console

if __name__ == "__main__":
    console()
