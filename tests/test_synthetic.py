import filecmp
import os

import numpy as np
import pandas as pd

from recbole_psrq.data.embeddings import load_item_embeddings
from recbole_psrq.convert.synthetic import DATASET_NAME, SyntheticMusicConfig, generate, write_dataset
from recbole_psrq.quick_start import DEFAULT_DATA_PATH

SUFFIXES = ("inter", "item", "text.npz", "audio.npz")


def _files(folder, name=DATASET_NAME):
    return [os.path.join(folder, f"{name}.{s}") for s in SUFFIXES]


def test_committed_dataset_is_the_generators_output(tmp_path):
    # regenerating with the default seed reproduces the shipped files byte for byte
    folder = write_dataset(str(tmp_path))
    shipped = os.path.join(DEFAULT_DATA_PATH, DATASET_NAME)
    for new, old in zip(_files(folder), _files(shipped)):
        assert filecmp.cmp(new, old, shallow=False), f"{old} differs from the generator's output"


def test_same_seed_identical_other_seed_different(tmp_path):
    cfg = SyntheticMusicConfig(n_users=50, n_items=100, n_rows=1000, seed=3)
    a = write_dataset(str(tmp_path / "a"), cfg)
    b = write_dataset(str(tmp_path / "b"), cfg)
    c = write_dataset(str(tmp_path / "c"), SyntheticMusicConfig(n_users=50, n_items=100, n_rows=1000, seed=4))
    assert all(filecmp.cmp(x, y, shallow=False) for x, y in zip(_files(a), _files(b)))
    assert not filecmp.cmp(_files(a)[0], _files(c)[0], shallow=False)


def _read(path):
    df = pd.read_csv(path, sep="\t")
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def test_default_dataset_has_the_music4all_like_shape():
    folder = os.path.join(DEFAULT_DATA_PATH, DATASET_NAME)
    inter = _read(os.path.join(folder, f"{DATASET_NAME}.inter"))
    assert len(inter) == 100_000
    assert inter.user_id.nunique() == 2000 and inter.item_id.nunique() == 3000
    assert set(inter.label.unique()) == {0, 1}
    assert not inter.duplicated(["user_id", "item_id"]).any()
    counts = inter.item_id.value_counts()
    assert (counts < 30).mean() >= 1 / 3  # long tail
    assert inter.groupby("user_id").timestamp.apply(lambda t: t.is_monotonic_increasing and t.is_unique).all()


def test_embeddings_aligned_by_id_and_follow_the_hierarchy():
    folder = os.path.join(DEFAULT_DATA_PATH, DATASET_NAME)
    items = _read(os.path.join(folder, f"{DATASET_NAME}.item")).set_index("item_id")
    for modality, dim in (("text", 384), ("audio", 128)):
        ids, emb = load_item_embeddings(os.path.join(folder, f"{DATASET_NAME}.{modality}.npz"))
        assert emb.shape == (3000, dim) and set(ids) == set(items.index)
        genre = items.loc[ids, "genre"].to_numpy()
        # nearest genre centroid recovers the genre for most tracks
        x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        names = np.unique(genre)
        centroids = np.stack([x[genre == g].mean(0) for g in names])
        accuracy = (names[np.argmax(x @ centroids.T, axis=1)] == genre).mean()
        assert accuracy > 0.9, (modality, accuracy)


def _decodable(x, y, rng):
    """Held-out accuracy of a least-squares one-vs-rest linear probe."""
    idx = rng.permutation(len(y))
    train, test = idx[: len(y) // 2], idx[len(y) // 2:]
    classes = np.unique(y)
    targets = (y[:, None] == classes[None]).astype(float)
    xb = np.c_[x, np.ones(len(x))]
    w, *_ = np.linalg.lstsq(xb[train], targets[train], rcond=1e-3)
    return (classes[np.argmax(xb[test] @ w, axis=1)] == y[test]).mean()


def test_mood_only_in_audio_theme_only_in_text():
    d = generate(SyntheticMusicConfig())
    rng = np.random.default_rng(0)
    chance = 1 / 5
    assert _decodable(d.audio, d.mood, rng) > 0.9
    assert _decodable(d.text, d.mood, rng) < chance + 0.1
    assert _decodable(d.text, d.theme, rng) > 0.9
    assert _decodable(d.audio, d.theme, rng) < chance + 0.1


def test_labels_depend_on_audio_only_and_text_only_tastes():
    d = generate(SyntheticMusicConfig())
    mood_match = d.mood[d.items] == d.fav_mood[d.users]
    theme_match = d.theme[d.items] == d.fav_theme[d.users]
    # a match on the audio-only (mood) or text-only (theme) taste raises the positive rate clearly
    assert d.labels[mood_match].mean() - d.labels[~mood_match].mean() > 0.15
    assert d.labels[theme_match].mean() - d.labels[~theme_match].mean() > 0.15
    assert 0.4 < d.labels.mean() < 0.7
