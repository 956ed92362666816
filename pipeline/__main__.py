"""`python -m pipeline` runs the `iqa` command line."""

from pipeline.executable import console

if __name__ == "__main__":
    console()
