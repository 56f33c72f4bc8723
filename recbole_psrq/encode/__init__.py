"""Item embeddings from content, written as the embedding files the semantic-ID hook reads.

``text``: sentence embeddings of item texts (offline Hugging Face model). ``audio``: the item audio encoder
(:func:`~recbole_psrq.encode.audio.encode_audio` and its content-keyed cache), on ``audio_io`` (reading,
resampling, segments), ``audio_descriptor`` (the weight-free descriptor) and ``audio_hf`` (local Hugging Face
audio models). ``table``: a per-item or per-group feature table joined by key and z-scored (the MPD converter's
artist audio uses it too). One CLI: ``python -m recbole_psrq.encode text|audio|table ...`` (``cli``). May import
``recbole_psrq.io``, ``recbole_psrq.names``, ``recbole_psrq.errors`` and ``recbole_psrq.data.embeddings``;
never RecBole.
"""
