"""The pure-torch mel / dB / MFCC / resampling code against values torchaudio computed once.

torchaudio does not import on the project's CPU torch, so ``test_encode_audio.py``'s live equivalence
test skips on most machines; these stored values (``fixtures/audio/reference/``, written by the
``make_reference.py`` next to them, which says how it was run) keep the check everywhere.
Tolerances are ~10x the differences measured when the file was made (torchaudio builds its filterbank
and resampling kernel in float32, ours in float64): filterbank 6e-6 of its max, mel 8.5e-7 of its max,
dB 2.3e-4, MFCC 1.5e-4 (values up to ~450), resampling 2.5e-5.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_psrq.encode import audio_descriptor, audio_io

REFERENCE = Path(__file__).parent / "fixtures" / "audio" / "reference" / "torchaudio_reference.npz"
FBANK_SHAPES = {"default": (1025, 0.0, 11025.0, 64, 22050), "band": (513, 30.0, 8000.0, 48, 22050)}


@pytest.fixture(scope="module")
def ref():
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


def close(ours, theirs, atol):
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=atol, rtol=0)


@pytest.mark.parametrize("shape", sorted(FBANK_SHAPES))
@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_mel_filterbank_matches_torchaudio(ref, shape, scale, norm):
    theirs = ref[f"fbank_{shape}_{scale}_{norm or 'none'}"]
    ours = audio_descriptor.mel_filterbank(*FBANK_SHAPES[shape], norm=norm, mel_scale=scale)
    assert ours.shape == theirs.shape
    close(ours, theirs, atol=6e-5 * np.abs(theirs).max())


def test_mel_db_and_mfcc_match_torchaudio(ref):
    x = torch.from_numpy(ref["signal"])
    desc = audio_descriptor.AudioDescriptor()  # the defaults: n_fft 2048, hop 512, 64 mels, 20 MFCCs
    close(desc.mel_spectrogram(x), ref["mel"], atol=1e-5 * ref["mel"].max())
    # the signal's quiet last quarter sits on the top_db floor, so the floor is compared too
    assert (ref["log_mel"] == ref["log_mel"].max() - 80.0).any()
    close(desc.log_mel(x), ref["log_mel"], atol=2e-3)
    close(desc.mfcc(x), ref["mfcc"], atol=2e-3)


@pytest.mark.parametrize("orig, new", [(44100, 22050), (16000, 22050), (44100, 16000), (44100, 24000)])
def test_resampling_matches_torchaudio(ref, orig, new):
    theirs = ref[f"resample_{orig}_{new}"]
    ours = audio_io.resample(ref["resample_input"], orig, new, backend="torch")
    assert ours.shape == theirs.shape
    close(ours, theirs, atol=2e-4)
