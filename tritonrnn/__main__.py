"""`python -m tritonrnn` — train on the seeds' tasks, benchmark, self-check. See tritonrnn/cli.py."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
