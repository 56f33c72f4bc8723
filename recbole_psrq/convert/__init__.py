"""Dataset tools: raw public music datasets -> RecBole atomic files, one module per source format
(``music4all``, ``music4all_onion``, ``hetrec_lastfm``, ``lastfm_1k``, ``lfm``, ``amazon2023``, ``mpd``) on the
shared reading/labelling/writing code in ``common``; the synthetic default dataset (``synthetic``) and the
checksum-verified download helper (``download``). One CLI: ``python -m recbole_psrq.convert <format|download|
synthetic> ...``. May import ``recbole_psrq.io``, ``recbole_psrq.errors``, ``recbole_psrq.data.embeddings`` and
``recbole_psrq.encode``; never RecBole.
"""
