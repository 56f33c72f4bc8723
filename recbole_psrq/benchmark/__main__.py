"""``python -m recbole_psrq.benchmark``: see :mod:`recbole_psrq.benchmark.cli`."""
import sys

from recbole_psrq.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
