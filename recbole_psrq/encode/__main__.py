"""``python -m recbole_psrq.encode``: see :mod:`recbole_psrq.encode.cli`."""
import sys

from recbole_psrq.encode.cli import main

sys.exit(main())
