"""Join key of a name: the converters join artist tables by it, and ``python -m recbole_psrq.encode table
--normalize-names`` joins any feature table by it, so a name spelled differently in two sources (case,
Unicode form, spacing) gets one key in both places."""
import math
import re
import unicodedata

_WS = re.compile(r"\s+")


def normalize_name(name):
    """Artist join key: NFKC, lower-case, whitespace collapsed to one space, stripped."""
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return ""
    return _WS.sub(" ", unicodedata.normalize("NFKC", str(name)).lower()).strip()
