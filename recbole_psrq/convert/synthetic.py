"""Deterministic generator of the embedded default dataset ``synthetic_music`` (SYNTHETIC data).

No real music dataset may be redistributed, so the project ships a synthetic catalogue shaped like the
paper's Music4all protocol. Generative model (all draws from one seeded ``numpy`` generator):

* **Catalogue.** genre -> sub-genre -> artist -> track. Each level has a latent vector per modality; a
  track's latent is the sum down its path (genre dominates, then sub-genre, artist, a track-specific
  part). Each track also has a **mood** (audio-only attribute) and a lyric **theme** (text-only).
* **Embeddings.** text (384-d) = random projection of [hierarchy latent ; theme latent] + noise;
  audio (128-d) = random projection of [hierarchy latent ; mood latent] + noise. Their cluster
  structure follows the hierarchy, and each modality carries one attribute the other cannot see.
* **Users.** Each user has a genre preference (sparse Dirichlet), a favourite mood, a favourite
  theme, and an activity level (log-normal). Item popularity is Zipf-like, so the catalogue has a long
  tail.
* **Listening rows.** A user's tracks are drawn without replacement with weight
  popularity x genre preference (one row per user-track pair, timestamps increasing per user).
  label = 1 ("played repeatedly") with probability sigmoid(genre match + mood match + theme match +
  track quality - bias), else 0 ("played once"). Mood taste is visible only through audio, theme taste
  only through text, so multimodal models have something to win.

Run ``python -m recbole_psrq.convert synthetic --out dataset`` to regenerate; the same seed gives
byte-identical files.
"""
import argparse
import os
from dataclasses import dataclass

import numpy as np

from recbole_psrq.data.embeddings import save_item_embeddings
from recbole_psrq.io import atomic_open

DATASET_NAME = "synthetic_music"


@dataclass(frozen=True)
class SyntheticMusicConfig:
    n_users: int = 2000
    n_items: int = 3000
    n_rows: int = 100_000
    n_genres: int = 8
    subgenres_per_genre: int = 4
    artists_per_subgenre: int = 10
    n_moods: int = 5
    n_themes: int = 5
    latent_dim: int = 32
    text_dim: int = 384
    audio_dim: int = 128
    zipf_exponent: float = 0.8
    seed: int = 2025


@dataclass
class SyntheticMusic:
    users: np.ndarray  # (R,) user index per row
    items: np.ndarray  # (R,) item index per row
    timestamps: np.ndarray  # (R,) int seconds, increasing per user
    labels: np.ndarray  # (R,) 0/1
    label_prob: np.ndarray  # (R,) the true P(label = 1), for Bayes-optimal reference metrics
    genre: np.ndarray  # (N,) per item
    subgenre: np.ndarray
    artist: np.ndarray
    mood: np.ndarray
    theme: np.ndarray
    text: np.ndarray  # (N, text_dim) float32
    audio: np.ndarray  # (N, audio_dim) float32
    fav_mood: np.ndarray  # (U,) hidden user tastes, for tests and reference metrics
    fav_theme: np.ndarray


def generate(cfg=SyntheticMusicConfig()):
    rng = np.random.default_rng(cfg.seed)
    n_sub = cfg.n_genres * cfg.subgenres_per_genre
    n_art = n_sub * cfg.artists_per_subgenre

    # catalogue: artists in sub-genres in genres; tracks spread over artists with Zipf-ish sizes
    sub_genre_of = np.repeat(np.arange(cfg.n_genres), cfg.subgenres_per_genre)
    art_sub_of = np.repeat(np.arange(n_sub), cfg.artists_per_subgenre)
    artist_weight = rng.pareto(1.5, n_art) + 1.0
    artist = np.sort(rng.choice(n_art, cfg.n_items, p=artist_weight / artist_weight.sum()))
    subgenre = art_sub_of[artist]
    genre = sub_genre_of[subgenre]
    mood = rng.integers(0, cfg.n_moods, cfg.n_items)
    theme = rng.integers(0, cfg.n_themes, cfg.n_items)

    text = _modality_embedding(rng, cfg, genre, subgenre, artist, theme, cfg.n_themes, cfg.text_dim)
    audio = _modality_embedding(rng, cfg, genre, subgenre, artist, mood, cfg.n_moods, cfg.audio_dim)

    # items: long-tailed popularity (random rank -> Zipf weight) and a latent quality
    popularity = 1.0 / (rng.permutation(cfg.n_items) + 1.0) ** cfg.zipf_exponent
    quality = rng.normal(0.0, 0.5, cfg.n_items)

    # users: sparse genre taste, one favourite mood and theme, log-normal activity
    genre_pref = rng.dirichlet(np.full(cfg.n_genres, 0.3), cfg.n_users)
    fav_mood = rng.integers(0, cfg.n_moods, cfg.n_users)
    fav_theme = rng.integers(0, cfg.n_themes, cfg.n_users)
    activity = rng.lognormal(0.0, 0.6, cfg.n_users)
    n_per_user = np.maximum(5, np.round(activity / activity.sum() * cfg.n_rows)).astype(int)
    n_per_user = np.minimum(n_per_user, cfg.n_items // 2)
    _fix_total(n_per_user, cfg.n_rows, rng)

    # rows: Gumbel top-k = weighted sampling without replacement, vectorised per user
    log_w = np.log(popularity)[None, :] + np.log(genre_pref[:, genre] + 1e-3)
    keys = log_w + rng.gumbel(size=log_w.shape)
    order = np.argsort(-keys, axis=1, kind="stable")
    users = np.repeat(np.arange(cfg.n_users), n_per_user)
    items = np.concatenate([order[u, :n] for u, n in enumerate(n_per_user)])

    logit = (
        3.0 * genre_pref[users, genre[items]]
        + 1.2 * (mood[items] == fav_mood[users])
        + 1.2 * (theme[items] == fav_theme[users])
        + quality[items]
        - 1.1
    )
    label_prob = 1.0 / (1.0 + np.exp(-logit))
    labels = (rng.random(len(items)) < label_prob).astype(np.int64)

    # strictly increasing integer timestamps per user (>= 1 s apart) spread over about a year,
    # so RecBole's time-ordered split is unambiguous
    start = 1_577_836_800  # 2020-01-01
    mean_gap = 365 * 86400 / n_per_user[users]
    gaps = 1 + (rng.exponential(1.0, len(items)) * mean_gap).astype(np.int64)
    first = np.r_[0, np.cumsum(n_per_user)[:-1]]
    cum = np.cumsum(gaps)
    timestamps = start + cum - np.repeat(cum[first] - gaps[first], n_per_user)

    return SyntheticMusic(users, items, timestamps, labels, label_prob, genre, subgenre, artist, mood, theme,
                          text, audio, fav_mood, fav_theme)


def _modality_embedding(rng, cfg, genre, subgenre, artist, attribute, n_attr, out_dim):
    k = cfg.latent_dim
    n_sub = cfg.n_genres * cfg.subgenres_per_genre
    n_art = n_sub * cfg.artists_per_subgenre
    g = rng.normal(0, 1.0, (cfg.n_genres, k))
    s = rng.normal(0, 0.6, (n_sub, k))
    a = rng.normal(0, 0.35, (n_art, k))
    hierarchy = g[genre] + s[subgenre] + a[artist] + rng.normal(0, 0.2, (len(genre), k))
    attr = rng.normal(0, 1.0, (n_attr, k // 2))[attribute]
    latent = np.concatenate([hierarchy, attr], axis=1)
    projection = rng.normal(0, 1.0 / np.sqrt(latent.shape[1]), (latent.shape[1], out_dim))
    emb = latent @ projection + rng.normal(0, 0.05, (len(genre), out_dim))
    return emb.astype(np.float32)


def _fix_total(counts, total, rng):
    """Adjust per-user counts in place so they sum to ``total`` exactly (keeps every count >= 5)."""
    diff = total - counts.sum()
    while diff != 0:
        step = 1 if diff > 0 else -1
        candidates = np.flatnonzero(counts > 5) if step < 0 else np.arange(len(counts))
        pick = rng.choice(candidates, min(abs(diff), len(candidates)), replace=False)
        counts[pick] += step
        diff = total - counts.sum()


def write_dataset(out_dir, cfg=SyntheticMusicConfig(), name=DATASET_NAME):
    """Generate and write ``<out_dir>/<name>/<name>.{inter,item,text.npz,audio.npz}``."""
    data = generate(cfg)
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    user_tok = np.char.add("u", np.char.zfill(data.users.astype(str), 4))
    item_names = np.char.add("t", np.char.zfill(np.arange(cfg.n_items).astype(str), 4))

    inter_lines = ["user_id:token\titem_id:token\ttimestamp:float\tlabel:float"]
    inter_lines += [f"{u}\t{item_names[i]}\t{t}\t{y}" for u, i, t, y in
                    zip(user_tok, data.items, data.timestamps, data.labels)]
    _write_text(os.path.join(folder, f"{name}.inter"), inter_lines)

    item_lines = ["item_id:token\tgenre:token\tsubgenre:token\tartist:token\tmood:token\ttheme:token"]
    item_lines += [f"{item_names[i]}\tg{data.genre[i]}\tsg{data.subgenre[i]}\ta{data.artist[i]}"
                   f"\tm{data.mood[i]}\tth{data.theme[i]}" for i in range(cfg.n_items)]
    _write_text(os.path.join(folder, f"{name}.item"), item_lines)

    save_item_embeddings(os.path.join(folder, f"{name}.text.npz"), item_names, data.text)
    save_item_embeddings(os.path.join(folder, f"{name}.audio.npz"), item_names, data.audio)
    return folder


def _write_text(path, lines):
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_psrq.convert synthetic",
                                     description="Regenerate the synthetic music dataset.")
    parser.add_argument("--out", default="dataset", help="parent folder (default: dataset)")
    parser.add_argument("--seed", type=int, default=SyntheticMusicConfig.seed)
    args = parser.parse_args(argv)
    folder = write_dataset(args.out, SyntheticMusicConfig(seed=args.seed))
    print(f"wrote {folder}")

