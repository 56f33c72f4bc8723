"""Reading audio for the audio encoder: decoding, cropping, resampling, the silence check and segments.

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
"""
import functools
import math
import os

import numpy as np

from recbole_psrq.errors import ConfigError, DataFormatError


class AudioDecodeError(DataFormatError):
    """One audio file cannot be used (unreadable, empty, silent...). ``reason`` is the short cause that
    :func:`recbole_psrq.encode.audio.encode_audio` reports for the item; the message also names the file and
    the fix."""

    def __init__(self, path, reason, fix=None):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}." + (f" {fix}" if fix else ""))


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


def _one_line(e):
    return " ".join(str(e).split())[:300] or type(e).__name__
