"""``python -m recbole_psrq.convert``: see :mod:`recbole_psrq.convert.cli`."""
import sys

from recbole_psrq.convert.cli import main

sys.exit(main())
