"""Offline audio embeddings for items: a weight-free descriptor (default) or any local Hugging Face audio model.

Reading (:func:`load_audio`)
    ``soundfile`` (libsndfile: wav, flac, ogg/vorbis/opus, mp3 with libsndfile >= 1.1, aiff, ...), mixed
    to mono, cropped to ``[offset_seconds, offset_seconds + max_seconds)`` *before* decoding the rest, and
    resampled to the target rate with a windowed-sinc (Hann, 6 zero crossings, roll-off 0.99) polyphase
    resampler (:func:`resample`; ``torchaudio.functional.resample`` with the same parameters when
    torchaudio imports, the pure-torch copy otherwise - they agree to ~1e-4 on unit-variance noise, torchaudio
    building its kernel in float32 and ours in float64; the backend used is part of the cache key).
    Unreadable, empty and silent files (RMS below ``silence_db`` dBFS) are *reported* and skipped, never
    fatal: such items are simply absent from the output (the semantic-ID engine's missing-modality policy
    gives them the ``unk`` code).

Segments
    With ``segment_seconds=S`` and ``n_segments=K`` the (cropped) signal is cut into K windows of S seconds,
    evenly spaced from its start to its end (K=1: the centre window); the item vector is the mean of
    the K window vectors. Signals shorter than S are used whole.

Method ``"descriptor"`` (default, no weights, pure torch, deterministic)
    22.05 kHz mono, STFT n_fft=2048 / hop 512 / periodic Hann / centred with reflect padding, power
    spectrogram P. Frame-level features, each summarised over time by its mean and (population) std:

    ===========  ==========  ===============================================================================
    block        size        content
    ===========  ==========  ===============================================================================
    logmel       2 * n_mels  mel power spectrogram (Slaney mel scale + Slaney area norm by default, f 0..sr/2)
                             in dB: 10*log10(max(mel, 1e-10)), floored at (clip max - 80 dB)
    mfcc         2 * n_mfcc  DCT-II (orthonormal) of the dB log-mel, first ``n_mfcc`` coefficients
    chroma       2 * 12      STFT power folded onto pitch classes C, C#, ..., B (bins 55 Hz..5 kHz, each bin
                             shared linearly between its two nearest semitones), each frame scaled to max 1
    spectral     2 * 5       centroid (Hz, magnitude-weighted), roll-off (Hz, 85 % of magnitude), flatness
                             (geometric / arithmetic mean of P, 0..1), zero-crossing rate (0..1), RMS (dBFS)
    ===========  ==========  ===============================================================================

    Layout: every block is ``[means..., stds...]``, blocks in the order above, so with the defaults
    (n_mels=64, n_mfcc=20) the vector has **202** dims: logmel mean [0, 64), logmel std [64, 128),
    mfcc mean [128, 148), mfcc std [148, 168), chroma mean [168, 180), chroma std [180, 192),
    spectral means [192, 197) (centroid, rolloff, flatness, zcr, rms), spectral stds [197, 202).
    :func:`descriptor_layout` returns the slices. The log-mel/MFCC part equals torchaudio's
    ``MelSpectrogram`` / ``AmplitudeToDB(top_db=80)`` / ``MFCC(norm="ortho")`` (tested when torchaudio
    imports); it is always computed in pure torch so results do not depend on whether torchaudio is there.
    The blocks live on very different scales (dB vs Hz vs 0..1), so :func:`encode_audio` z-scores each
    column over the encoded items by default for this method (``standardize``) before writing the file; the
    cache holds the raw vectors.

Method ``"hf"``: any Hugging Face audio encoder from a local folder
    ``AutoFeatureExtractor`` + ``AutoModel`` ``.from_pretrained(folder, local_files_only=True)`` (offline,
    ``trust_remote_code`` off unless asked: MERT-v1, the paper's encoder, ships custom code and needs it;
    MERT-v0 is a plain HuBERT), audio resampled to the feature extractor's ``sampling_rate``, run on CPU
    in fp32 (or bf16) with ``output_hidden_states=True``. Segment vector = mean over time of the selected
    hidden states, averaged over the selected layers: ``layers="all"`` (every entry of ``hidden_states``,
    embedding output included), ``"last"`` (= ``last_hidden_state``) or a list of indices into
    ``hidden_states`` (negative allowed). Only segments of exactly equal length share a batch, so no
    padding ever enters a model and an item's vector does not depend on the batch it landed in
    (use ``segment_seconds`` to make most segments equal-length and the batches full).

Cache
    One ``.npy`` per item under ``cache_dir`` (default ``$RECBOLE_PSRQ_CACHE/audio_encoder`` or
    ``./cache/audio_encoder``), keyed by a SHA-256 over the file's *content* (SHA-256 of its bytes) and
    every option that changes the vector (method, rates, crop, segments, descriptor settings, resampler,
    model id, layers, dtype). Content digests are remembered in ``file_digests.json`` keyed by
    (path, size, mtime_ns, ctime_ns, inode), so unchanged files are not re-read on later calls; any rewrite
    of a file changes its ctime and forces a re-hash. All cache writes are atomic.

CLI::

    python -m recbole_psrq.data.audio_encoder --items converted/x/x.item_audio.tsv --audio-root AUDIO_DIR \\
        --out converted/x/x.audio.npz [--method descriptor|hf] [--model-path DIR] [--layers all|last|0,6,12] \\
        [--max-seconds 30] [--segment-seconds 10 --n-segments 3] [--report x.audio_report.json]

``--items`` is a TAB-separated file with a header holding at least the columns ``item_id`` and ``path``
(relative paths are resolved against ``--audio-root``, default the items file's folder).
"""
import argparse
import collections
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import sys
import time

import numpy as np

from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import atomic_open, atomic_save_npy, cache_dir, file_digest

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_SILENCE_DB = -60.0
DEFAULT_BATCH_SIZE = 8
METHODS = ("descriptor", "hf")
SPECTRAL_FEATURES = ("centroid", "rolloff", "flatness", "zcr", "rms")
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


class AudioDecodeError(DataFormatError):
    """One audio file cannot be used (unreadable, empty, silent...). ``reason`` is the short cause that
    :func:`encode_audio` reports for the item; the message also names the file and the fix."""

    def __init__(self, path, reason, fix=None):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}." + (f" {fix}" if fix else ""))


def default_cache_dir():
    """``$RECBOLE_PSRQ_CACHE/audio_encoder`` if set, else ``./cache/audio_encoder`` (git-ignored at the repo root)."""
    return cache_dir("audio_encoder")


# --------------------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _torchaudio_functional():
    """``torchaudio.functional`` when torchaudio imports and works, else None. Any import failure counts:
    a torchaudio wheel built for another torch raises OSError, not ImportError."""
    try:
        import torchaudio.functional as F  # noqa: N812

        return F
    except Exception:  # pragma: no cover - depends on the environment
        return None


def torchaudio_available():
    return _torchaudio_functional() is not None


def resolve_resample_backend(backend="auto"):
    if backend not in ("auto", "torch", "torchaudio"):
        raise ConfigError(f"resample backend must be 'auto', 'torch' or 'torchaudio', got {backend!r}.")
    if backend == "auto":
        return "torchaudio" if torchaudio_available() else "torch"
    if backend == "torchaudio" and not torchaudio_available():
        raise ConfigError("resample backend 'torchaudio' was asked for but torchaudio does not import; "
                          "install a torchaudio build matching your torch, or use backend='torch' / 'auto'.")
    return backend


@functools.lru_cache(maxsize=32)
def _sinc_kernel(orig, new, lowpass_filter_width=6, rolloff=0.99):
    """Polyphase windowed-sinc kernel (new, 1, K) for the gcd-reduced rates ``orig -> new``.

    Same construction as ``torchaudio.functional.resample(..., resampling_method="sinc_interp_hann")``:
    cut-off ``rolloff * min(orig, new) / 2``, Hann window over ``lowpass_filter_width`` zero crossings,
    built in float64 and stored as float32.
    """
    import torch

    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = kernel * window * (base / orig)
    return kernel.to(torch.float32), width


def _resample_torch(x, orig_sr, new_sr):
    import torch.nn.functional as nnf

    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, width = _sinc_kernel(orig, new)
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = nnf.pad(flat, (width, width + orig))
    out = nnf.conv1d(padded[:, None], kernel, stride=orig)  # (B, new, L/orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = int(math.ceil(new * length / orig))
    return out[:, :target].reshape(shape[:-1] + (target,))


def resample(x, orig_sr, new_sr, backend="auto"):
    """Resample the last axis of ``x`` (numpy array or torch tensor) from ``orig_sr`` to ``new_sr`` Hz.

    Band-limited windowed-sinc interpolation (see :func:`_sinc_kernel`); output length
    ``ceil(n * new_sr / orig_sr)``; returns the input type (numpy float32 for numpy input).
    ``backend``: ``"auto"`` (torchaudio when it imports, else pure torch), ``"torch"``, ``"torchaudio"``.
    """
    import torch

    orig_sr, new_sr = int(orig_sr), int(new_sr)
    if orig_sr <= 0 or new_sr <= 0:
        raise ConfigError(f"sample rates must be positive integers, got {orig_sr} -> {new_sr}.")
    is_numpy = not isinstance(x, torch.Tensor)
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if is_numpy else x.to(torch.float32)
    if orig_sr != new_sr and t.shape[-1] > 0:
        if resolve_resample_backend(backend) == "torchaudio":
            t = _torchaudio_functional().resample(t, orig_sr, new_sr)
        else:
            t = _resample_torch(t, orig_sr, new_sr)
    return t.numpy().astype(np.float32, copy=False) if is_numpy else t


# --------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------

def load_audio(path, sample_rate=22050, mono=True, max_seconds=None, offset_seconds=0.0,
               resample_backend="auto"):
    """Decode ``path`` with soundfile; return float32 samples at ``sample_rate`` (``None``: the file's own).

    ``mono=True``: 1-d array (channels averaged); ``mono=False``: (channels, n). Only
    ``[offset_seconds, offset_seconds + max_seconds)`` is decoded. Raises :class:`AudioDecodeError`
    (a :class:`DataFormatError`) for a missing, unreadable or empty file or an offset past the end.
    """
    import soundfile as sf

    path = os.fspath(path)
    if max_seconds is not None and max_seconds <= 0:
        raise ConfigError(f"max_seconds must be > 0 or None, got {max_seconds}.")
    if offset_seconds is None or offset_seconds < 0:
        raise ConfigError(f"offset_seconds must be >= 0, got {offset_seconds}.")
    if not os.path.isfile(path):
        raise AudioDecodeError(path, "file not found", "Check the audio path / --audio-root.")
    try:
        with sf.SoundFile(path) as f:
            native_sr = int(f.samplerate)
            start = int(round(offset_seconds * native_sr))
            n_frames = -1 if max_seconds is None else int(round(max_seconds * native_sr))
            total = f.frames
            if start > 0:
                if total > 0 and start >= total:
                    raise AudioDecodeError(
                        path, f"offset_seconds={offset_seconds} is past the end of the file "
                              f"({total / native_sr:.2f} s)", "Use a smaller offset_seconds.")
                f.seek(start)
            data = f.read(frames=n_frames, dtype="float32", always_2d=True)
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as e:
        msg = _one_line(e)
        if "Format not recognised" in msg or "does not exist or is not a regular file" in msg:
            # libsndfile's message for an existing file whose header it cannot parse
            reason = "unreadable: not a recognised audio file (corrupt, or a format libsndfile lacks)"
        else:
            reason = f"unreadable by soundfile/libsndfile ({msg})"
        raise AudioDecodeError(path, reason, "Re-encode it as wav/flac/ogg/mp3, or drop the item.") from e
    if data.shape[0] == 0:
        raise AudioDecodeError(path, "empty (0 audio frames" + (" after offset" if start else "") + ")",
                               "Replace the file or drop the item.")
    if not np.isfinite(data).all():
        raise AudioDecodeError(path, "contains NaN/inf samples", "Re-encode the file.")
    x = data.T  # (channels, n)
    if mono:
        x = x.mean(axis=0)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if sample_rate is not None and int(sample_rate) != native_sr:
        x = resample(x, native_sr, int(sample_rate), backend=resample_backend)
    return x


def rms_db(x):
    """RMS level of ``x`` in dBFS (-200 for all-zero input)."""
    x = np.asarray(x, dtype=np.float64)
    ms = float(np.mean(x * x)) if x.size else 0.0
    return 10.0 * math.log10(ms) if ms > 1e-20 else -200.0


def split_segments(x, sample_rate, segment_seconds=None, n_segments=1):
    """``n_segments`` windows of ``segment_seconds`` evenly spaced over ``x`` (first at the start, last at
    the end; one window: the centre). ``segment_seconds=None`` or a shorter signal: ``[x]``."""
    if segment_seconds is None:
        return [x]
    length = int(round(segment_seconds * sample_rate))
    n = x.shape[-1]
    if length >= n:
        return [x]
    if n_segments == 1:
        starts = [(n - length) // 2]
    else:
        starts = sorted({int(round(s)) for s in np.linspace(0, n - length, n_segments)})
    return [x[..., s:s + length] for s in starts]


def _one_line(e):
    return " ".join(str(e).split())[:300] or type(e).__name__


# --------------------------------------------------------------------------------------------------------
# weight-free descriptor
# --------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DescriptorConfig:
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 64
    n_mfcc: int = 20
    f_min: float = 0.0
    f_max: float = None  # None: sample_rate / 2
    mel_scale: str = "slaney"  # or "htk"
    mel_norm: str = "slaney"  # or None
    top_db: float = 80.0
    rolloff: float = 0.85
    chroma_f_min: float = 55.0
    chroma_f_max: float = 5000.0

    def __post_init__(self):
        if self.mel_scale not in ("slaney", "htk"):
            raise ConfigError(f"mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}.")
        if self.mel_norm not in ("slaney", None):
            raise ConfigError(f"mel_norm must be 'slaney' or None, got {self.mel_norm!r}.")
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ConfigError(f"n_mfcc must be in [1, n_mels={self.n_mels}], got {self.n_mfcc}.")
        if self.hop_length < 1 or self.n_fft < 16:
            raise ConfigError(f"need n_fft >= 16 and hop_length >= 1, got {self.n_fft}, {self.hop_length}.")

    @property
    def fmax(self):
        return self.sample_rate / 2 if self.f_max is None else float(self.f_max)

    @property
    def dim(self):
        return 2 * (self.n_mels + self.n_mfcc + len(PITCH_CLASSES) + len(SPECTRAL_FEATURES))


def descriptor_layout(config=None):
    """``{name: (start, stop)}`` of the descriptor blocks, in vector order (see the module docstring)."""
    c = config or DescriptorConfig()
    sizes = [("logmel_mean", c.n_mels), ("logmel_std", c.n_mels), ("mfcc_mean", c.n_mfcc),
             ("mfcc_std", c.n_mfcc), ("chroma_mean", 12), ("chroma_std", 12),
             ("spectral_mean", len(SPECTRAL_FEATURES)), ("spectral_std", len(SPECTRAL_FEATURES))]
    layout, start = {}, 0
    for name, size in sizes:
        layout[name] = (start, start + size)
        start += size
    return layout


def descriptor_dim(config=None):
    return (config or DescriptorConfig()).dim


def _hz_to_mel(f, mel_scale):
    if mel_scale == "htk":
        return 2595.0 * math.log10(1.0 + f / 700.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return f / f_sp if f < min_log_hz else min_log_mel + math.log(f / min_log_hz) / logstep


def _mel_to_hz(m, mel_scale):
    import torch

    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(n_freqs, f_min, f_max, n_mels, sample_rate, norm="slaney", mel_scale="slaney"):
    """Triangular mel filterbank (n_freqs, n_mels), float32; the layout of ``torchaudio.functional.melscale_fbanks``.

    ``n_freqs`` STFT bins spanning 0..sample_rate/2; filter edges equally spaced on the mel scale
    (``"slaney"``: linear below 1 kHz, log above, as librosa; ``"htk"``: 2595 log10(1 + f/700));
    ``norm="slaney"`` divides each triangle by its width in Hz (constant energy per band).
    """
    import torch

    all_freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(_hz_to_mel(f_min, mel_scale), _hz_to_mel(f_max, mel_scale), n_mels + 2,
                           dtype=torch.float64)
    f_pts = _mel_to_hz(m_pts, mel_scale)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2:n_mels + 2] - f_pts[:n_mels]))[None, :]
    return fb.to(torch.float32)


def dct_matrix(n_mfcc, n_mels):
    """Orthonormal DCT-II as a (n_mels, n_mfcc) matrix: ``mfcc = logmel.T @ D`` (torchaudio ``create_dct``)."""
    import torch

    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    dct = torch.cos(math.pi / n_mels * (n + 0.5) * k)
    dct[0] *= 1.0 / math.sqrt(2.0)
    dct *= math.sqrt(2.0 / n_mels)
    return dct.t().to(torch.float32)


def chroma_filterbank(n_freqs, sample_rate, f_min=55.0, f_max=5000.0):
    """(12, n_freqs) map from STFT bins to pitch classes C..B: a bin at MIDI pitch p (fractional) gives
    weight ``1 - |p - q|`` to its two nearest semitones q (circularly, modulo 12); bins outside
    [f_min, min(f_max, sr/2)] are ignored."""
    import torch

    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    fb = torch.zeros(12, n_freqs, dtype=torch.float64)
    ok = (freqs >= f_min) & (freqs <= min(f_max, sample_rate / 2))
    pitch = 69.0 + 12.0 * torch.log2(freqs[ok] / 440.0)
    lower = torch.floor(pitch)
    frac = pitch - lower
    cols = torch.nonzero(ok).squeeze(1)
    fb[(lower.long() % 12), cols] += 1.0 - frac
    fb[((lower.long() + 1) % 12), cols] += frac
    return fb.to(torch.float32)


class AudioDescriptor:
    """Callable computing the fixed-length descriptor of a mono float32 signal at ``config.sample_rate``."""

    def __init__(self, config=None):
        import torch

        self.config = c = config or DescriptorConfig()
        self.n_freqs = c.n_fft // 2 + 1
        self.window = torch.hann_window(c.n_fft, periodic=True, dtype=torch.float32)
        self.mel_fb = mel_filterbank(self.n_freqs, c.f_min, c.fmax, c.n_mels, c.sample_rate,
                                     norm=c.mel_norm, mel_scale=c.mel_scale)
        self.dct = dct_matrix(c.n_mfcc, c.n_mels)
        self.chroma_fb = chroma_filterbank(self.n_freqs, c.sample_rate, c.chroma_f_min, c.chroma_f_max)
        self.freqs = torch.linspace(0, c.sample_rate / 2, self.n_freqs, dtype=torch.float32)

    @property
    def dim(self):
        return self.config.dim

    def _prepare(self, x):
        import torch

        x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
        if x.ndim != 1:
            raise ConfigError(f"the descriptor needs a mono 1-d signal, got shape {tuple(x.shape)}.")
        if x.shape[0] <= self.config.n_fft // 2:  # reflect padding needs more samples than the pad
            x = torch.nn.functional.pad(x, (0, self.config.n_fft // 2 + 1 - x.shape[0]))
        return x

    def power_spectrogram(self, x):
        """|STFT|^2, (n_freqs, frames): the same as ``torchaudio.transforms.Spectrogram(n_fft, hop_length=hop)``."""
        import torch

        c = self.config
        x = self._prepare(x)
        spec = torch.stft(x, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.n_fft, window=self.window,
                          center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        return spec.abs().pow(2.0)

    def mel_spectrogram(self, x=None, power=None):
        """Mel power spectrogram (n_mels, frames) (== ``torchaudio.transforms.MelSpectrogram``)."""
        power = self.power_spectrogram(x) if power is None else power
        return (power.transpose(0, 1) @ self.mel_fb).transpose(0, 1)

    def log_mel(self, x=None, mel=None):
        """dB mel spectrogram floored ``top_db`` below its maximum (== ``AmplitudeToDB("power", top_db)``)."""
        import torch

        mel = self.mel_spectrogram(x) if mel is None else mel
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
        return torch.maximum(db, db.max() - self.config.top_db)

    def mfcc(self, x=None, log_mel=None):
        """(n_mfcc, frames) (== ``torchaudio.transforms.MFCC(norm="ortho", log_mels=False)``)."""
        log_mel = self.log_mel(x) if log_mel is None else log_mel
        return (log_mel.transpose(0, 1) @ self.dct).transpose(0, 1)

    def frame_features(self, x):
        """Dict of frame-level feature matrices (features, frames)."""
        import torch

        c = self.config
        x = self._prepare(x)
        power = self.power_spectrogram(x)
        mel = self.mel_spectrogram(power=power)
        log_mel = self.log_mel(mel=mel)
        mfcc = self.mfcc(log_mel=log_mel)
        chroma = self.chroma_fb @ power
        chroma = chroma / torch.clamp(chroma.max(dim=0, keepdim=True).values, min=1e-10)
        mag = power.sqrt()
        total = mag.sum(dim=0)
        safe_total = torch.clamp(total, min=1e-10)
        centroid = (self.freqs[:, None] * mag).sum(dim=0) / safe_total
        reached = torch.cumsum(mag, dim=0) >= c.rolloff * total[None, :]
        rolloff_idx = torch.clamp(reached.logical_not().sum(dim=0), max=self.n_freqs - 1)
        rolloff = torch.where(total > 1e-10, self.freqs[rolloff_idx], torch.zeros_like(total))
        p = power + 1e-10
        flatness = torch.exp(torch.log(p).mean(dim=0)) / p.mean(dim=0)
        half = c.n_fft // 2
        frames = torch.nn.functional.pad(x, (half, half)).unfold(0, c.n_fft, c.hop_length)  # (frames, n_fft)
        signs = torch.signbit(frames)
        zcr = (signs[:, 1:] != signs[:, :-1]).float().mean(dim=1)
        rms = 10.0 * torch.log10(torch.clamp((frames * frames).mean(dim=1), min=1e-10))
        n = min(power.shape[1], frames.shape[0])
        spectral = torch.stack([centroid[:n], rolloff[:n], flatness[:n], zcr[:n], rms[:n]])
        return {"logmel": log_mel, "mfcc": mfcc, "chroma": chroma, "spectral": spectral}

    def __call__(self, x):
        """float32 numpy vector of length ``self.dim`` (layout: :func:`descriptor_layout`)."""
        import torch

        parts = []
        for block in self.frame_features(x).values():
            block = block.to(torch.float64)
            parts += [block.mean(dim=1), block.std(dim=1, unbiased=False)]
        return torch.cat(parts).numpy().astype(np.float32)


@functools.lru_cache(maxsize=8)
def _descriptor(config):
    return AudioDescriptor(config)


def compute_descriptor(segments, config=None):
    """Mean of the descriptor vectors of ``segments`` (list of mono float32 arrays at ``config.sample_rate``)."""
    import torch

    with torch.no_grad():
        desc = _descriptor(config or DescriptorConfig())
        return np.mean([desc(s) for s in segments], axis=0).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Hugging Face audio models
# --------------------------------------------------------------------------------------------------------

def resolve_model_path(model_path):
    if model_path is None:
        raise ConfigError(
            "method='hf' needs model_path= / --model-path: a local Hugging Face audio model folder "
            "(config.json, preprocessor_config.json, weights), e.g. a snapshot of m-a-p/MERT-v1-95M "
            "(add trust_remote_code=True for MERT-v1). Models are never downloaded. Or use the weight-free "
            "method='descriptor'.")
    folder = os.path.abspath(os.fspath(model_path))
    if not os.path.isdir(folder) or not os.path.isfile(os.path.join(folder, "config.json")):
        raise ConfigError(
            f"Audio model folder not found or incomplete: {folder} (needs config.json, "
            "preprocessor_config.json and weights of a Hugging Face audio model). Pass --model-path / "
            "model_path= pointing at a local model folder; models are never downloaded.")
    return folder


_MODEL_CACHE = {}
_DTYPES = ("float32", "bfloat16")


def _load_model(folder, trust_remote_code=False, dtype="float32"):
    """``(feature_extractor, model)`` loaded offline on CPU in eval mode (kept in memory per folder/options)."""
    key = (folder, bool(trust_remote_code), dtype)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    import torch

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoFeatureExtractor, AutoModel

    hint = ("" if trust_remote_code else " If the model ships its own code (e.g. MERT-v1), pass "
            "trust_remote_code=True / --trust-remote-code, after checking that code.")
    try:
        fe = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(
            f"Could not load the feature extractor of {folder} offline ({_one_line(e)}); the folder needs a "
            f"preprocessor_config.json (with sampling_rate).{hint}") from e
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(
            f"Could not load the audio model from {folder} offline ({_one_line(e)}). Point --model-path at a "
            f"complete local Hugging Face model folder.{hint}") from e
    if not getattr(fe, "sampling_rate", None):
        raise ConfigError(f"{folder}: the feature extractor has no sampling_rate; add it to preprocessor_config.json.")
    model.eval()
    model.to("cpu")
    if dtype == "bfloat16":
        model.to(torch.bfloat16)
    _MODEL_CACHE[key] = (fe, model)
    return fe, model


def _model_sampling_rate(folder):
    """``sampling_rate`` from the folder's preprocessor_config.json without loading anything (None if absent)."""
    try:
        with open(os.path.join(folder, "preprocessor_config.json"), encoding="utf-8") as f:
            rate = json.load(f).get("sampling_rate")
    except (OSError, ValueError, AttributeError):
        return None
    return int(rate) if isinstance(rate, (int, float)) and rate > 0 else None


def _layer_indices(layers, n_hidden):
    """Indices into ``hidden_states`` (length ``n_hidden``) for ``layers``."""
    if layers == "all":
        return list(range(n_hidden))
    if layers == "last":
        return [n_hidden - 1]
    out = []
    for i in layers:
        if not isinstance(i, (int, np.integer)) or not -n_hidden <= int(i) < n_hidden:
            raise ConfigError(f"layers: index {i!r} out of range for a model with {n_hidden} hidden states "
                              f"(embedding output + {n_hidden - 1} layers); use 'all', 'last' or ints in "
                              f"[{-n_hidden}, {n_hidden - 1}].")
        out.append(int(i) % n_hidden)
    return out


def _check_layers(layers):
    if layers in ("all", "last"):
        return layers
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise ConfigError(f"layers must be 'all', 'last' or a list of hidden-state indices, got {layers!r}.")
    layers = list(layers)
    if not layers or not all(isinstance(i, (int, np.integer)) for i in layers):
        raise ConfigError(f"layers must be a non-empty list of integers, got {layers!r}.")
    return [int(i) for i in layers]


def embed_segments_hf(segments, feature_extractor, model, layers="all"):
    """(B, hidden) float32 for a batch of equal-length mono segments at the extractor's rate: the mean over
    time of the selected ``hidden_states``, averaged over those layers."""
    import torch

    sr = int(feature_extractor.sampling_rate)
    inputs = feature_extractor([np.asarray(s, dtype=np.float32) for s in segments], sampling_rate=sr,
                               return_tensors="pt", padding=True)
    dtype = next(model.parameters()).dtype
    inputs = {k: (v.to(dtype) if torch.is_floating_point(v) else v) for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    hidden = out.hidden_states
    if hidden is None:
        raise ConfigError(f"{type(model).__name__} returned no hidden_states; use an encoder model "
                          "that supports output_hidden_states.")
    idx = _layer_indices(layers, len(hidden))
    pooled = torch.stack([hidden[i].float().mean(dim=1) for i in idx]).mean(dim=0)
    return pooled.numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------------

class _DigestIndex:
    """Content digests remembered per (path, size, mtime_ns, ctime_ns, inode) in ``file_digests.json``."""

    def __init__(self, cache_dir, enabled=True):
        self.path = os.path.join(cache_dir, "file_digests.json") if enabled else None
        self.entries, self.dirty = {}, False
        if self.path and os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    self.entries = dict(json.load(f))
            except (OSError, ValueError, TypeError):
                self.entries = {}  # unreadable index: rebuild

    def digest(self, path):
        st = os.stat(path)
        stamp = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
        d = self.entries.get(stamp)
        if d is None:
            d = file_digest(path)
            if self.path:
                self.entries[stamp] = d
                self.dirty = True
        return d

    def save(self):
        if self.path and self.dirty:
            with atomic_open(self.path, "w", encoding="utf-8") as f:
                json.dump(self.entries, f, sort_keys=True)
            self.dirty = False


def options_key(options):
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


def item_cache_key(content_digest, options_digest):
    return hashlib.sha256(f"{content_digest}:{options_digest}".encode()).hexdigest()


def _cache_file(cache_dir, key):
    return os.path.join(cache_dir, key[:2], f"audio-{key[:40]}.npy")


def _load_cached(path, dim):
    try:
        v = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # unreadable entry: recompute and overwrite
    if v.ndim != 1 or (dim is not None and v.shape[0] != dim) or not np.isfinite(v).all():
        return None
    return v.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------------
# encode_audio
# --------------------------------------------------------------------------------------------------------

def _read_segments(path, sample_rate, max_seconds, offset_seconds, segment_seconds, n_segments, silence_db,
                   resample_backend):
    x = load_audio(path, sample_rate=sample_rate, mono=True, max_seconds=max_seconds,
                   offset_seconds=offset_seconds, resample_backend=resample_backend)
    level = rms_db(x)
    if level < silence_db:
        where = f" from offset {offset_seconds} s" if offset_seconds else ""
        raise AudioDecodeError(path, f"silent (RMS {level:.1f} dBFS{where} < silence_db={silence_db})",
                               "Check the file, or lower silence_db.")
    return split_segments(x, sample_rate, segment_seconds, n_segments)


def _standardize(matrix):
    if matrix.shape[0] < 2:
        return matrix
    mean = matrix.mean(axis=0, dtype=np.float64)
    std = matrix.std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return ((matrix - mean) / std).astype(np.float32)


def encode_audio(item_ids, paths, method="descriptor", model_path=None, *, audio_root=None,
                 max_seconds=DEFAULT_MAX_SECONDS, offset_seconds=0.0, segment_seconds=None, n_segments=1,
                 silence_db=DEFAULT_SILENCE_DB, descriptor_config=None, layers="all", dtype="float32",
                 trust_remote_code=False, batch_size=DEFAULT_BATCH_SIZE, standardize=None,
                 resample_backend="auto", cache_dir=None, use_cache=True, out_path=None, progress=True):
    """Embed the audio file of each item; return ``(item_ids ndarray[str], float32 matrix (n, d), report)``.

    Items whose file cannot be used (missing, unreadable, empty, silent, model error) are skipped and listed
    in ``report["failed"]`` as ``{"item_id", "path", "reason"}`` (and logged); the returned ids/matrix and
    the ``out_path`` file (``save_item_embeddings``) hold only the encoded items, in input order. Raises
    :class:`DataFormatError` only for caller mistakes (length mismatch, duplicate ids) or when *no* item
    could be encoded.

    ``method="descriptor"``: the weight-free descriptor (``descriptor_config``: :class:`DescriptorConfig`,
    its ``sample_rate`` is the analysis rate). ``method="hf"``: the local Hugging Face model at
    ``model_path`` (``layers``, ``dtype`` "float32"/"bfloat16", ``trust_remote_code``, ``batch_size``).
    ``standardize`` (default: True for the descriptor, False for hf) z-scores each column over the encoded
    items. ``report`` also holds ``n_items``, ``encoded``, ``cache_hits``, ``computed``, ``dim``,
    ``seconds``, ``sample_rate``, ``method``.
    """
    from recbole_psrq.data.embeddings import save_item_embeddings
    from tqdm.auto import tqdm

    t0 = time.time()
    item_ids = [str(i) for i in item_ids]
    paths = list(paths)
    if len(item_ids) != len(paths):
        raise DataFormatError(f"encode_audio: got {len(item_ids)} item ids but {len(paths)} paths; pass "
                              "exactly one audio path per item id.")
    if len(set(item_ids)) != len(item_ids):
        dup = sorted(i for i, n in collections.Counter(item_ids).items() if n > 1)[:5]
        raise DataFormatError(f"encode_audio: duplicate item ids {dup}; each item needs exactly one audio file.")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}.")
    if segment_seconds is not None and segment_seconds <= 0:
        raise ConfigError(f"segment_seconds must be > 0 or None, got {segment_seconds}.")
    if int(n_segments) < 1:
        raise ConfigError(f"n_segments must be >= 1, got {n_segments}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}.")
    backend = resolve_resample_backend(resample_backend)
    as_float = (lambda v: None if v is None else float(v))  # 30 and 30.0 must give the same cache key
    options = {"v": CACHE_VERSION, "method": method, "max_seconds": as_float(max_seconds),
               "offset_seconds": float(offset_seconds), "segment_seconds": as_float(segment_seconds),
               "n_segments": int(n_segments) if segment_seconds else 1, "resample": backend}
    fe = model = None
    if method == "descriptor":
        dcfg = descriptor_config or DescriptorConfig()
        if not isinstance(dcfg, DescriptorConfig):
            raise ConfigError("descriptor_config must be a recbole_psrq.data.audio_encoder.DescriptorConfig.")
        sample_rate, dim = dcfg.sample_rate, dcfg.dim
        options["descriptor"] = dataclasses.asdict(dcfg)
    else:
        from recbole_psrq.data.text_encoder import model_id

        folder = resolve_model_path(model_path)
        layers = _check_layers(layers)
        sample_rate, dim = _model_sampling_rate(folder), None
        if sample_rate is None:  # not in preprocessor_config.json: ask the loaded feature extractor
            fe, model = _load_model(folder, trust_remote_code=trust_remote_code, dtype=dtype)
            sample_rate = int(fe.sampling_rate)
        options.update({"model": model_id(folder), "layers": layers, "dtype": dtype})
    options["sample_rate"] = sample_rate
    opt_digest = options_key(options)
    if standardize is None:
        standardize = method == "descriptor"

    cache_dir = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    digests = _DigestIndex(cache_dir, enabled=use_cache)
    root = None if audio_root is None else os.fspath(audio_root)
    vectors, failed, hits, full_paths = {}, {}, 0, {}
    pending = []  # (index, path, cache_file)
    for i, p in enumerate(paths):
        if p is None or (isinstance(p, float) and math.isnan(p)) or str(p).strip() == "":
            failed[i] = ("" if p is None else str(p), "no audio path given")
            continue
        full = os.fspath(p)
        if root is not None and not os.path.isabs(full):
            full = os.path.join(root, full)
        full_paths[i] = full
        if not os.path.isfile(full):
            failed[i] = (full, "file not found")
            continue
        cfile = None
        if use_cache:
            try:
                cfile = _cache_file(cache_dir, item_cache_key(digests.digest(full), opt_digest))
            except OSError as e:
                failed[i] = (full, f"cannot read file ({_one_line(e)})")
                continue
            if os.path.isfile(cfile):
                v = _load_cached(cfile, dim)
                if v is not None:
                    vectors[i] = v
                    hits += 1
                    continue
        pending.append((i, full, cfile))
    digests.save()

    read = functools.partial(_read_segments, sample_rate=sample_rate, max_seconds=max_seconds,
                             offset_seconds=offset_seconds, segment_seconds=segment_seconds,
                             n_segments=int(n_segments), silence_db=silence_db, resample_backend=backend)
    chunk = max(1, batch_size) * 4 if method == "hf" else 1
    with tqdm(total=len(pending), desc=f"audio encoder ({method})", unit="file", disable=not progress) as bar:
        for start in range(0, len(pending), chunk):
            part = pending[start:start + chunk]
            segs = {}
            for i, full, _ in part:
                try:
                    segs[i] = read(full)
                except AudioDecodeError as e:
                    failed[i] = (full, e.reason)
            if method == "descriptor":
                for i in list(segs):
                    try:
                        vectors[i] = compute_descriptor(segs[i], dcfg)
                    except (RuntimeError, ValueError) as e:
                        failed[i] = (full_paths[i], f"descriptor failed ({_one_line(e)})")
            else:
                if model is None and segs:  # loaded only when some item is not in the cache
                    fe, model = _load_model(folder, trust_remote_code=trust_remote_code, dtype=dtype)
                    if int(fe.sampling_rate) != sample_rate:
                        raise ConfigError(f"{folder}: the feature extractor reports sampling_rate "
                                          f"{fe.sampling_rate}, preprocessor_config.json says {sample_rate}.")
                out, errors = _run_hf(segs, fe, model, layers, batch_size)
                vectors.update(out)
                for i, reason in errors.items():
                    failed[i] = (full_paths[i], reason)
            for i, _, cfile in part:
                if cfile is not None and i in vectors and np.isfinite(vectors[i]).all():
                    atomic_save_npy(cfile, vectors[i])
                elif i in vectors and not np.isfinite(vectors[i]).all():
                    del vectors[i]
                    failed[i] = (full_paths[i], "non-finite embedding")
            bar.update(len(part))

    order = [i for i in range(len(item_ids)) if i in vectors]
    failures = [{"item_id": item_ids[i], "path": failed[i][0], "reason": failed[i][1]} for i in sorted(failed)]
    for f in failures:
        logger.warning("audio encoder: item %s skipped: %s (%s)", f["item_id"], f["reason"], f["path"])
    if item_ids and not order:
        first = "; ".join(f"{f['item_id']}: {f['reason']}" for f in failures[:3])
        raise DataFormatError(
            f"encode_audio: none of the {len(item_ids)} audio files could be encoded ({first}...). Check the "
            "paths / --audio-root and the file formats (wav, flac, ogg, mp3).")
    if order:
        matrix = np.stack([vectors[i] for i in order]).astype(np.float32)
    else:
        matrix = np.zeros((0, dim or 0), dtype=np.float32)
    if standardize:
        matrix = _standardize(matrix)
    ids = np.asarray([item_ids[i] for i in order])
    dt = time.time() - t0
    report = {"method": method, "n_items": len(item_ids), "encoded": len(order), "failed": failures,
              "cache_hits": hits, "computed": len(order) - hits, "dim": int(matrix.shape[1]),
              "sample_rate": sample_rate, "standardized": bool(standardize), "seconds": round(dt, 3)}
    if progress:
        print(f"[audio encoder] {len(order)}/{len(item_ids)} items encoded ({hits} from cache, "
              f"{len(failures)} skipped) in {dt:.1f}s, {matrix.shape[1]} dims, method {method}", file=sys.stderr)
    if out_path is not None:
        save_item_embeddings(out_path, ids, matrix)
        report["out_path"] = os.fspath(out_path)
    return ids, matrix, report


def _run_hf(segs, fe, model, layers, batch_size):
    """Vectors for ``{index: [segments]}``: equal-length segments are batched together; a batch that fails
    is retried one segment at a time so only the offending items are reported."""
    by_len = {}
    for i, seg_list in segs.items():
        for s in seg_list:
            by_len.setdefault(len(s), []).append((i, s))
    sums, errors = {}, {}
    for length in sorted(by_len):
        group = by_len[length]
        for b in range(0, len(group), batch_size):
            batch = group[b:b + batch_size]
            try:
                rows = embed_segments_hf([s for _, s in batch], fe, model, layers)
                results = list(zip(batch, rows))
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001 - isolate the failing item(s)
                results = []
                for item in batch:
                    try:
                        results.append((item, embed_segments_hf([item[1]], fe, model, layers)[0]))
                    except ConfigError:
                        raise
                    except Exception as e:  # noqa: BLE001
                        errors[item[0]] = f"model failed on this audio ({_one_line(e)})"
            for (i, _), row in results:
                sums.setdefault(i, []).append(row)
    out = {i: np.mean(rows, axis=0).astype(np.float32) for i, rows in sums.items() if i not in errors}
    return out, errors


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------

def parse_layers(text):
    if text in ("all", "last"):
        return text
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--layers must be 'all', 'last' or comma-separated integers, got {text!r}.") from None


def main(argv=None):
    from recbole_psrq.data.text_encoder import read_item_text

    p = argparse.ArgumentParser(
        prog="python -m recbole_psrq.data.audio_encoder",
        description="Embed item audio files offline (weight-free descriptor or a local Hugging Face audio "
                    "model) into a <name>.audio.npz embedding file.")
    p.add_argument("--items", required=True, help="TAB-separated file with header columns item_id and path")
    p.add_argument("--out", required=True, help="output .npz (arrays item_id, embedding)")
    p.add_argument("--audio-root", default=None, help="folder for relative paths (default: the items file's folder)")
    p.add_argument("--method", choices=METHODS, default="descriptor")
    p.add_argument("--model-path", default=None, help="local Hugging Face audio model folder (method hf)")
    p.add_argument("--layers", default="all", help="hf: 'all', 'last' or comma-separated hidden-state indices")
    p.add_argument("--dtype", choices=_DTYPES, default="float32")
    p.add_argument("--trust-remote-code", action="store_true", help="hf: allow the model folder's own code (MERT-v1)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="crop length (<= 0: whole file)")
    p.add_argument("--offset-seconds", type=float, default=0.0)
    p.add_argument("--segment-seconds", type=float, default=None)
    p.add_argument("--n-segments", type=int, default=1)
    p.add_argument("--silence-db", type=float, default=DEFAULT_SILENCE_DB)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--no-standardize", action="store_true", help="descriptor: keep raw (not z-scored) columns")
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (default ./cache/audio_encoder)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report", default=None, help="write the JSON report (encoded / failed items) here")
    args = p.parse_args(argv)
    ids, paths = read_item_text(args.items, text_column="path")
    root = args.audio_root if args.audio_root is not None else os.path.dirname(os.path.abspath(args.items))
    _, matrix, report = encode_audio(
        ids, paths, method=args.method, model_path=args.model_path, audio_root=root,
        max_seconds=args.max_seconds if args.max_seconds > 0 else None, offset_seconds=args.offset_seconds,
        segment_seconds=args.segment_seconds, n_segments=args.n_segments, silence_db=args.silence_db,
        layers=parse_layers(args.layers), dtype=args.dtype, trust_remote_code=args.trust_remote_code,
        batch_size=args.batch_size, standardize=False if args.no_standardize else None,
        cache_dir=args.cache_dir, use_cache=not args.no_cache, out_path=args.out, progress=not args.no_progress)
    if args.report:
        with atomic_open(args.report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    for f in report["failed"][:20]:
        print(f"skipped {f['item_id']}: {f['reason']} ({f['path']})", file=sys.stderr)
    print(f"wrote {args.out}: {matrix.shape[0]} items x {matrix.shape[1]} dims "
          f"({len(report['failed'])} of {report['n_items']} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
