"""The weight-free audio descriptor: log-mel, MFCC, chroma and spectral statistics in pure torch.

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
    The blocks live on very different scales (dB vs Hz vs 0..1), so
    :func:`recbole_psrq.encode.audio.encode_audio` z-scores each column over the encoded items by default for
    this method (``standardize``) before writing the file; the cache holds the raw vectors.
"""
import dataclasses
import functools
import math

import numpy as np

from recbole_psrq.errors import ConfigError

SPECTRAL_FEATURES = ("centroid", "rolloff", "flatness", "zcr", "rms")
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


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
