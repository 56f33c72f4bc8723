"""recbole-psrq: PSRQ semantic IDs + MCCA for multimodal music recommendation, as a RecBole extension.

Stage 1 (``recbole_psrq.quantization``, ``recbole_psrq.data``): item embeddings -> semantic-ID fields.
Stage 2 (``recbole_psrq.model``): MCCA, a RecBole model that consumes them.
Importing the package is light (no RecBole import); it only applies :mod:`recbole_psrq.compat`.
"""
from recbole_psrq import compat as _compat

_compat.apply()

__version__ = "0.1.0"
