"""Audio encoder: reading/resampling/cropping, the weight-free descriptor, the Hugging Face model path,
the content-keyed cache and the bad-file report. Real clips: CC0 Sonic Pi samples (fixtures/audio/LICENSE.md)."""
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from recbole_psrq.data.embeddings import load_item_embeddings
from recbole_psrq.encode import audio, audio_descriptor, audio_hf, audio_io, cli
from recbole_psrq.errors import ConfigError, DataFormatError

FIXTURES = Path(__file__).parent / "fixtures" / "audio"
HAS_MP3 = "MP3" in sf.available_formats()
needs_mp3 = pytest.mark.skipif(not HAS_MP3, reason=f"libsndfile {sf.__libsndfile_version__} has no MP3 support "
                                                    "(needs libsndfile >= 1.1 with mpg123/lame)")
CLIPS = {"tabla": "tabla_loop.flac", "bass": "bass_woodsy.flac", "guitar": "guitar_em9.ogg"}
if HAS_MP3:
    CLIPS["drone"] = "ambient_drone.mp3"
CLIP_IDS = list(CLIPS)
CLIP_PATHS = [str(FIXTURES / f) for f in CLIPS.values()]
DIM = 202


def sine(freq, sr, seconds, amp=0.5):
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


def encode(ids, paths, tmp_path, **kw):
    kw.setdefault("cache_dir", tmp_path / "cache")
    kw.setdefault("progress", False)
    return audio.encode_audio(ids, paths, **kw)


# ------------------------------------------------------------------------------------------------ reading

def test_fixtures_are_small_16k_mono_clips():
    for path in CLIP_PATHS:
        info = sf.info(path)
        assert (info.samplerate, info.channels) == (16000, 1) and abs(info.duration - 2.5) < 0.01
        assert os.path.getsize(path) < 60_000
    assert (FIXTURES / "LICENSE.md").read_text().count("CC0") >= 3


@pytest.mark.parametrize("orig,new", [(44100, 22050), (16000, 22050), (22050, 16000), (48000, 24000)])
def test_resampled_sine_keeps_frequency_length_and_level(orig, new):
    x = sine(1000.0, orig, 1.0)
    y = audio_io.resample(x, orig, new, backend="torch")
    assert y.dtype == np.float32 and len(y) == math.ceil(len(x) * new / orig)
    assert abs(peak_hz(y, new) - 1000.0) <= new / len(y)  # within one FFT bin
    mid = slice(len(y) // 10, -len(y) // 10)  # away from the zero-padded edges
    assert np.sqrt(np.mean(y[mid] ** 2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.01)


def test_resampling_is_band_limited_and_deterministic():
    x = sine(10000.0, 44100, 0.5)  # above the 8 kHz Nyquist of 16 kHz: must be filtered, not aliased
    y = audio_io.resample(x, 44100, 16000, backend="torch")
    assert audio_io.rms_db(y[800:-800]) < audio_io.rms_db(x) - 40
    t = torch.as_tensor(sine(440.0, 22050, 0.3)).repeat(2, 1)  # tensors in, tensors out, batched
    out = audio_io.resample(t, 22050, 16000, backend="torch")
    assert isinstance(out, torch.Tensor) and out.shape == (2, math.ceil(t.shape[1] * 16000 / 22050))
    assert torch.equal(out, audio_io.resample(t, 22050, 16000, backend="torch"))


def test_load_audio_mono_mix_crop_offset_and_rate(tmp_path):
    sr = 8000
    left, right = sine(500.0, sr, 2.0, 0.4), sine(1500.0, sr, 2.0, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")

    mono = audio_io.load_audio(path, sample_rate=None)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-7)
    both = audio_io.load_audio(path, sample_rate=None, mono=False)
    assert both.shape == (2, 2 * sr)

    crop = audio_io.load_audio(path, sample_rate=None, max_seconds=0.25, offset_seconds=0.5)
    np.testing.assert_allclose(crop, mono[4000:6000], atol=1e-7)
    tail = audio_io.load_audio(path, sample_rate=None, offset_seconds=1.5, max_seconds=10)  # clipped at the end
    assert len(tail) == sr // 2

    up = audio_io.load_audio(path, sample_rate=16000, max_seconds=1.0)
    assert len(up) == 16000 and abs(peak_hz(up, 16000) - 500.0) < 2.0  # the louder channel dominates

    with pytest.raises(audio_io.AudioDecodeError, match="past the end"):
        audio_io.load_audio(path, offset_seconds=3.0)
    with pytest.raises(audio_io.AudioDecodeError, match="file not found"):
        audio_io.load_audio(tmp_path / "nope.wav")
    with pytest.raises(ConfigError, match="max_seconds"):
        audio_io.load_audio(path, max_seconds=0)


@needs_mp3
def test_mp3_reads_and_writes(tmp_path):
    path = tmp_path / "tone.mp3"
    sf.write(path, sine(880.0, 22050, 1.0), 22050, format="MP3", subtype="MPEG_LAYER_III")
    x = audio_io.load_audio(path, sample_rate=22050)
    assert abs(len(x) - 22050) < 1200 and abs(peak_hz(x, 22050) - 880.0) < 3.0
    drone = audio_io.load_audio(FIXTURES / "ambient_drone.mp3", sample_rate=None)
    assert len(drone) == 40000 and audio_io.rms_db(drone) > -40
    crop = audio_io.load_audio(FIXTURES / "ambient_drone.mp3", sample_rate=None, offset_seconds=1.0, max_seconds=0.5)
    np.testing.assert_allclose(crop, drone[16000:24000], atol=1e-3)  # mp3 seeking is sample-accurate


def test_split_segments_positions():
    x = np.arange(100, dtype=np.float32)
    assert audio_io.split_segments(x, 10, None)[0] is x
    assert len(audio_io.split_segments(x, 10, 20.0, 3)) == 1  # shorter than one segment: whole signal
    (centre,) = audio_io.split_segments(x, 10, 2.0, 1)
    assert centre[0] == 40 and len(centre) == 20
    segs = audio_io.split_segments(x, 10, 2.0, 3)
    assert [s[0] for s in segs] == [0, 40, 80] and all(len(s) == 20 for s in segs)


# ------------------------------------------------------------------------------------------- descriptor

def test_descriptor_layout_is_contiguous_and_documented():
    layout = audio_descriptor.descriptor_layout()
    spans = list(layout.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert spans[-1][1] == audio_descriptor.descriptor_dim() == DIM
    assert layout["mfcc_mean"] == (128, 148) and layout["spectral_std"] == (197, 202)
    small = audio_descriptor.DescriptorConfig(n_mels=32, n_mfcc=13)
    assert audio_descriptor.descriptor_dim(small) == 2 * (32 + 13 + 12 + 5)
    with pytest.raises(ConfigError, match="n_mfcc"):
        audio_descriptor.DescriptorConfig(n_mels=16, n_mfcc=20)


def test_descriptor_features_make_sense():
    desc = audio_descriptor.AudioDescriptor()
    sr = desc.config.sample_rate
    a4 = sine(440.0, sr, 1.0)
    feats = desc.frame_features(a4)
    chroma = feats["chroma"].mean(dim=1)
    assert int(chroma.argmax()) == audio_descriptor.PITCH_CLASSES.index("A")
    centroid, rolloff, flatness, zcr, rms = feats["spectral"].mean(dim=1).tolist()
    assert abs(centroid - 440.0) < 30 and abs(rolloff - 440.0) < 30 and flatness < 0.01
    assert zcr == pytest.approx(2 * 440.0 / sr, rel=0.05)
    assert rms == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.5)
    noise = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    assert desc.frame_features(noise)["spectral"][2].mean() > 0.3  # white noise is spectrally flat
    v = desc(a4)
    assert v.shape == (DIM,) and v.dtype == np.float32 and np.isfinite(v).all()
    short = desc(sine(440.0, sr, 0.01))  # shorter than one FFT frame: zero-padded, still finite
    assert np.isfinite(short).all()


def test_real_clips_encode_to_distinct_finite_vectors(tmp_path):
    out = tmp_path / "clips.audio.npz"
    ids, raw, report = encode(CLIP_IDS, CLIP_PATHS, tmp_path, standardize=False, out_path=out)
    assert ids.tolist() == CLIP_IDS and raw.shape == (len(CLIPS), DIM) and raw.dtype == np.float32
    assert np.isfinite(raw).all()
    assert report["encoded"] == len(CLIPS) and report["failed"] == [] and report["dim"] == DIM
    assert report["sample_rate"] == 22050 and report["computed"] == len(CLIPS)
    a, b = audio_descriptor.descriptor_layout()["logmel_mean"]
    for i in range(len(CLIPS)):
        for j in range(i + 1, len(CLIPS)):  # every pair differs clearly in its mean spectrum
            assert np.abs(raw[i, a:b] - raw[j, a:b]).mean() > 1.0, (CLIP_IDS[i], CLIP_IDS[j])
    # the bass clip has the lowest spectral centroid
    centroid = raw[:, audio_descriptor.descriptor_layout()["spectral_mean"][0]]
    assert CLIP_IDS[int(np.argmin(centroid))] == "bass"

    file_ids, file_emb = load_item_embeddings(out)
    assert file_ids.tolist() == CLIP_IDS and file_emb.shape == (len(CLIPS), DIM)

    # default: columns z-scored over the encoded items (the cache holds the raw vectors)
    _, std, report2 = encode(CLIP_IDS, CLIP_PATHS, tmp_path)
    assert report2["standardized"] and report2["cache_hits"] == len(CLIPS)
    np.testing.assert_allclose(std.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(std, audio._standardize(raw), atol=1e-6)


def test_segments_average_segment_descriptors(tmp_path):
    path = CLIP_PATHS[0]
    _, m, _ = encode(["t"], [path], tmp_path, segment_seconds=1.0, n_segments=3, standardize=False)
    x = audio_io.load_audio(path, sample_rate=22050)
    segs = audio_io.split_segments(x, 22050, 1.0, 3)
    assert len(segs) == 3
    np.testing.assert_allclose(m[0], np.mean([audio_descriptor.compute_descriptor([s]) for s in segs], axis=0),
                               rtol=1e-5, atol=1e-4)
    _, whole, _ = encode(["t"], [path], tmp_path, standardize=False)
    assert not np.allclose(m[0], whole[0])


def test_cropping_changes_the_vector_and_the_cache_key(tmp_path):
    path = CLIP_PATHS[0]
    _, full, _ = encode(["t"], [path], tmp_path, standardize=False)
    _, crop, rep = encode(["t"], [path], tmp_path, standardize=False, max_seconds=1.0, offset_seconds=0.5)
    assert rep["cache_hits"] == 0 and not np.allclose(full, crop)
    x = audio_io.load_audio(path, sample_rate=22050, max_seconds=1.0, offset_seconds=0.5)
    assert len(x) == 22050
    np.testing.assert_allclose(crop[0], audio_descriptor.compute_descriptor([x]), rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------------- bad files / report

@pytest.fixture
def bad_files(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "corrupt.wav").write_bytes(np.random.default_rng(1).bytes(4096))
    sf.write(d / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(d / "empty.wav", np.zeros((0, 1), dtype=np.float32), 16000)  # a header and no frames
    sf.write(d / "tiny_noise.wav", np.full(16000, 1e-5, dtype=np.float32), 16000, subtype="FLOAT")  # -100 dBFS
    (d / "notes.txt").write_text("not audio")
    return d


def test_bad_files_are_reported_and_skipped(tmp_path, bad_files, caplog):
    ids = ["good", "corrupt", "silent", "empty", "quiet", "text", "missing", "nopath"]
    paths = [CLIP_PATHS[1], "corrupt.wav", "silent.wav", "empty.wav", "tiny_noise.wav", "notes.txt",
             "missing.wav", None]
    out = tmp_path / "x.audio.npz"
    with caplog.at_level("WARNING", logger=audio.__name__):
        got, m, report = encode(ids, paths, tmp_path, audio_root=bad_files, out_path=out)
    assert got.tolist() == ["good"] and m.shape == (1, DIM) and np.isfinite(m).all()
    assert report["encoded"] == 1 and report["n_items"] == len(ids)
    reasons = {f["item_id"]: f["reason"] for f in report["failed"]}
    assert set(reasons) == set(ids) - {"good"}
    assert reasons["corrupt"].startswith("unreadable: not a recognised audio file")
    assert reasons["text"].startswith("unreadable: not a recognised audio file")
    assert reasons["silent"].startswith("silent (RMS -200.0 dBFS")
    assert reasons["quiet"].startswith("silent (RMS -100.0 dBFS")
    assert reasons["empty"].startswith("empty")
    assert reasons["missing"] == "file not found" and reasons["nopath"] == "no audio path given"
    failed_paths = {f["item_id"]: f["path"] for f in report["failed"]}
    assert failed_paths["corrupt"] == str(bad_files / "corrupt.wav")
    assert "item corrupt skipped: unreadable: not a recognised" in caplog.text
    file_ids, _ = load_item_embeddings(out)
    assert file_ids.tolist() == ["good"]  # missing modality: failed items are simply absent

    # a lower silence threshold lets the quiet (but not the all-zero) file through
    got, _, report = encode(["quiet", "silent"], ["tiny_noise.wav", "silent.wav"], tmp_path,
                            audio_root=bad_files, silence_db=-120.0, standardize=False)
    assert got.tolist() == ["quiet"] and [f["item_id"] for f in report["failed"]] == ["silent"]


def test_all_failed_and_caller_mistakes_raise(tmp_path, bad_files):
    with pytest.raises(DataFormatError, match=r"none of the 2 audio files.*corrupt: unreadable"):
        encode(["corrupt", "silent"], [bad_files / "corrupt.wav", bad_files / "silent.wav"], tmp_path)
    with pytest.raises(DataFormatError, match="2 item ids but 1 paths"):
        encode(["a", "b"], [CLIP_PATHS[0]], tmp_path)
    with pytest.raises(DataFormatError, match=r"duplicate item ids \['a'\]"):
        encode(["a", "a"], CLIP_PATHS[:2], tmp_path)
    with pytest.raises(ConfigError, match="method must be one of"):
        encode(["a"], CLIP_PATHS[:1], tmp_path, method="mert")
    with pytest.raises(ConfigError, match="needs model_path"):
        encode(["a"], CLIP_PATHS[:1], tmp_path, method="hf")
    with pytest.raises(ConfigError, match="Audio model folder not found"):
        encode(["a"], CLIP_PATHS[:1], tmp_path, method="hf", model_path=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="n_segments"):
        encode(["a"], CLIP_PATHS[:1], tmp_path, segment_seconds=1.0, n_segments=0)


# ------------------------------------------------------------------------------------------------- cache

def test_cache_hit_skips_decoding_and_content_change_invalidates(tmp_path, monkeypatch):
    d = tmp_path / "audio"
    d.mkdir()
    shutil.copy(CLIP_PATHS[0], d / "a.flac")
    shutil.copy(CLIP_PATHS[1], d / "b.flac")
    ids, paths = ["a", "b"], [str(d / "a.flac"), str(d / "b.flac")]
    _, first, rep = encode(ids, paths, tmp_path, standardize=False)
    assert rep["cache_hits"] == 0 and rep["computed"] == 2
    assert (tmp_path / "cache" / "file_digests.json").is_file()
    assert len(list((tmp_path / "cache").glob("*/audio-*.npy"))) == 2

    real_load = audio_io.load_audio
    calls = []

    def failing_load(path, *a, **k):
        raise AssertionError(f"decoded {path} despite the cache")

    monkeypatch.setattr(audio_io, "load_audio", failing_load)
    _, second, rep = encode(ids, paths, tmp_path, standardize=False)
    assert rep["cache_hits"] == 2 and np.array_equal(first, second)

    # same content under another path/item id: still a hit (the key is the content, not the name)
    shutil.copy(d / "a.flac", d / "a_copy.flac")
    _, third, rep = encode(["z"], [str(d / "a_copy.flac")], tmp_path, standardize=False)
    assert rep["cache_hits"] == 1 and np.array_equal(third[0], first[0])

    # new content in b.flac -> only b is decoded again
    def counting_load(path, *a, **k):
        calls.append(os.path.basename(path))
        return real_load(path, *a, **k)

    monkeypatch.setattr(audio_io, "load_audio", counting_load)
    shutil.copy(CLIP_PATHS[2], d / "b.flac")
    _, fourth, rep = encode(ids, paths, tmp_path, standardize=False)
    assert calls == ["b.flac"] and rep["cache_hits"] == 1
    assert np.array_equal(fourth[0], first[0]) and not np.allclose(fourth[1], first[1])

    # an option that changes the vector is a different key; use_cache=False never reads/writes the cache
    calls.clear()
    encode(ids, paths, tmp_path, standardize=False,
           descriptor_config=audio_descriptor.DescriptorConfig(n_mels=32))
    assert sorted(calls) == ["a.flac", "b.flac"]
    calls.clear()
    encode(ids, paths, tmp_path / "nocache", standardize=False, use_cache=False)
    assert sorted(calls) == ["a.flac", "b.flac"] and not (tmp_path / "nocache").exists()


def test_unreadable_cache_entry_is_recomputed(tmp_path):
    _, first, _ = encode(["a"], CLIP_PATHS[:1], tmp_path, standardize=False)
    (entry,) = (tmp_path / "cache").glob("*/audio-*.npy")
    entry.write_bytes(b"garbage")
    _, again, rep = encode(["a"], CLIP_PATHS[:1], tmp_path, standardize=False)
    assert rep["cache_hits"] == 0 and np.array_equal(first, again)
    assert np.array_equal(np.load(entry), first[0])


# ---------------------------------------------------------------------------------- torchaudio equivalence

@pytest.mark.skipif(not audio_io.torchaudio_available(),
                    reason="torchaudio does not import here (PyPI has no CPU torchaudio build for this torch); "
                           "the pure-torch path is used")
def test_pure_torch_matches_torchaudio():
    import torchaudio.functional as F
    import torchaudio.transforms as T

    for scale in ("slaney", "htk"):
        for norm in ("slaney", None):
            ours = audio_descriptor.mel_filterbank(1025, 0.0, 11025.0, 64, 22050, norm=norm, mel_scale=scale)
            theirs = F.melscale_fbanks(1025, 0.0, 11025.0, 64, 22050, norm=norm, mel_scale=scale)
            torch.testing.assert_close(ours, theirs, atol=1e-5 * float(theirs.abs().max()), rtol=0)
    x = torch.as_tensor(audio_io.load_audio(CLIP_PATHS[2], sample_rate=22050, resample_backend="torch"))
    desc = audio_descriptor.AudioDescriptor()
    mel_kw = dict(n_fft=2048, hop_length=512, n_mels=64, norm="slaney", mel_scale="slaney")
    mel = T.MelSpectrogram(22050, **mel_kw)(x)
    torch.testing.assert_close(desc.mel_spectrogram(x), mel, atol=1e-5 * float(mel.max()), rtol=0)
    db = T.AmplitudeToDB("power", top_db=80.0)(mel)
    torch.testing.assert_close(desc.log_mel(x), db, atol=1e-3, rtol=0)
    mfcc = T.MFCC(22050, n_mfcc=20, norm="ortho", log_mels=False, melkwargs=mel_kw)(x)
    torch.testing.assert_close(desc.mfcc(x), mfcc, atol=2e-3, rtol=0)
    y = torch.randn(2, 30000, generator=torch.Generator().manual_seed(0))
    for orig, new in [(44100, 22050), (16000, 22050), (44100, 16000), (44100, 24000)]:
        # torchaudio builds its kernel in float32, ours in float64: equal to float32 rounding
        torch.testing.assert_close(audio_io._resample_torch(y, orig, new), F.resample(y, orig, new), atol=2e-4, rtol=0)


def test_auto_backend_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(audio_io, "torchaudio_available", lambda: False)
    assert audio_io.resolve_resample_backend("auto") == "torch"
    with pytest.raises(ConfigError, match="torchaudio does not import"):
        audio_io.resolve_resample_backend("torchaudio")


# ------------------------------------------------------------------------------- Hugging Face model path

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised 2-layer, 32-d Wav2Vec2 saved as a local model folder (16 kHz extractor)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("tiny_wav2vec2")
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16, 16), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            feat_extract_norm="group", do_stable_layer_norm=False)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    return str(folder)


def _direct_hidden_means(folder, path, seconds=audio.DEFAULT_MAX_SECONDS):
    from transformers import AutoFeatureExtractor, AutoModel

    fe = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    x = audio_io.load_audio(path, sample_rate=16000, max_seconds=seconds)
    with torch.no_grad():
        out = model(**fe([x], sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
    return out.last_hidden_state.mean(1)[0].numpy(), [h.mean(1)[0].numpy() for h in out.hidden_states]


def test_hf_model_layers_shape_and_determinism(tmp_path, tiny_model, monkeypatch):
    paths = CLIP_PATHS[:3]
    ids = ["a", "b", "c"]
    _, last, report = encode(ids, paths, tmp_path, method="hf", model_path=tiny_model, layers="last")
    assert last.shape == (3, 32) and last.dtype == np.float32 and np.isfinite(last).all()
    assert report["sample_rate"] == 16000 and report["dim"] == 32 and not report["standardized"]
    direct_last, direct_all = _direct_hidden_means(tiny_model, paths[0])
    assert len(direct_all) == 3  # embedding output + 2 layers
    np.testing.assert_allclose(last[0], direct_last, atol=1e-5)
    np.testing.assert_allclose(last[0], direct_all[-1], atol=1e-5)

    _, every, _ = encode(ids, paths, tmp_path, method="hf", model_path=tiny_model, layers="all")
    np.testing.assert_allclose(every[0], np.mean(direct_all, axis=0), atol=1e-5)
    _, pick, _ = encode(ids, paths, tmp_path, method="hf", model_path=tiny_model, layers=[0, -1])
    np.testing.assert_allclose(pick[0], (direct_all[0] + direct_all[2]) / 2, atol=1e-5)
    _, first, _ = encode(ids, paths, tmp_path, method="hf", model_path=tiny_model, layers=[0])
    assert not np.allclose(first, last, atol=1e-3)
    assert not np.allclose(last[0], last[1], atol=1e-3)  # different clips, different vectors

    # deterministic and independent of batching (no cache: recomputed with batch size 1)
    _, again, rep = encode(ids, paths, tmp_path, method="hf", model_path=tiny_model, layers="last",
                           batch_size=1, use_cache=False)
    assert rep["cache_hits"] == 0
    np.testing.assert_allclose(again, last, atol=1e-6)
    monkeypatch.setattr(audio_hf, "_load_model", lambda *a, **k: pytest.fail("model loaded despite a full cache hit"))
    _, cached, rep = encode(ids, paths, tmp_path, method="hf", model_path=tiny_model, layers="last")
    assert rep["cache_hits"] == 3 and np.array_equal(cached, last)
    monkeypatch.undo()

    with pytest.raises(ConfigError, match="out of range"):
        encode(ids, paths, tmp_path, method="hf", model_path=tiny_model, layers=[3])
    with pytest.raises(ConfigError, match="layers must be"):
        encode(ids, paths, tmp_path, method="hf", model_path=tiny_model, layers="middle")


def test_hf_resamples_segments_and_bf16(tmp_path, tiny_model):
    wav = tmp_path / "tone22k.wav"
    sf.write(wav, sine(330.0, 22050, 1.5) + sine(2000.0, 22050, 1.5, 0.1), 22050)  # not the model's rate
    ids, m, rep = encode(["tone", "clip"], [wav, CLIP_PATHS[0]], tmp_path, method="hf", model_path=tiny_model,
                         segment_seconds=1.0, n_segments=2, batch_size=2)
    assert m.shape == (2, 32) and np.isfinite(m).all() and rep["encoded"] == 2
    x = audio_io.load_audio(CLIP_PATHS[0], sample_rate=16000)
    fe, model = audio_hf._load_model(tiny_model)
    segs = audio_io.split_segments(x, 16000, 1.0, 2)
    np.testing.assert_allclose(m[1], audio_hf.embed_segments_hf(segs, fe, model, "all").mean(axis=0), atol=1e-5)

    _, bf16, _ = encode(["clip"], CLIP_PATHS[:1], tmp_path, method="hf", model_path=tiny_model,
                        dtype="bfloat16", layers="last")
    _, fp32, _ = encode(["clip"], CLIP_PATHS[:1], tmp_path, method="hf", model_path=tiny_model, layers="last")
    assert np.isfinite(bf16).all()
    cos = float(bf16[0] @ fp32[0] / (np.linalg.norm(bf16[0]) * np.linalg.norm(fp32[0])))
    assert cos > 0.98 and not np.array_equal(bf16, fp32)


def test_hf_folder_without_feature_extractor(tmp_path, tiny_model):
    folder = tmp_path / "no_fe"
    shutil.copytree(tiny_model, folder)
    os.remove(folder / "preprocessor_config.json")
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        encode(["a"], CLIP_PATHS[:1], tmp_path, method="hf", model_path=folder)


# --------------------------------------------------------------------------------------------------- CLI

def test_cli(tmp_path, bad_files, capsys):
    for name in ("tabla_loop.flac", "guitar_em9.ogg"):
        shutil.copy(FIXTURES / name, bad_files / name)
    items = bad_files / "d.item_audio.tsv"
    items.write_text("item_id\tpath\textra\nt1\ttabla_loop.flac\tx\nt2\tguitar_em9.ogg\t\nt3\tcorrupt.wav\t\n")
    out, report = tmp_path / "d.audio.npz", tmp_path / "report.json"
    assert cli.main(["audio", "--items", str(items), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                     "--max-seconds", "2", "--report", str(report), "--no-progress"]) == 0
    ids, emb = load_item_embeddings(out)
    assert ids.tolist() == ["t1", "t2"] and emb.shape == (2, DIM)
    rep = json.loads(report.read_text())
    assert rep["encoded"] == 2 and rep["failed"][0]["item_id"] == "t3"
    captured = capsys.readouterr()
    assert "2 items x 202 dims (1 of 3 skipped)" in captured.out and "skipped t3: unreadable" in captured.err
