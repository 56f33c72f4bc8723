"""``python -m recbole_psrq.tune``: see :mod:`recbole_psrq.tune.cli`."""
import sys

from recbole_psrq.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
