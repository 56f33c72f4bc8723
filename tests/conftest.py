import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from recbole_psrq.convert.synthetic import SyntheticMusicConfig, write_dataset

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

# small enough for one-epoch RecBole runs in seconds, same generative model as the default dataset
TINY = SyntheticMusicConfig(n_users=80, n_items=150, n_rows=3000, n_genres=3, subgenres_per_genre=2,
                            artists_per_subgenre=3, seed=7)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a temp dir: RecBole writes log/, log_tensorboard/ and saved/ relative to the CWD."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_data_path(tmp_path):
    """A folder holding a tiny synthetic_music dataset; pass it as data_path."""
    data_path = tmp_path / "data"
    write_dataset(str(data_path), TINY)
    return str(data_path)


def one_epoch(data_path, **extra):
    return {"data_path": data_path, "epochs": 1, "train_batch_size": 256, "eval_batch_size": 1024,
            **extra}


RAW_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "raw"
# Hand-written fixture files whose real raw names look like the licensed originals are kept under
# other names (the repository holds no file named like licensed data); tests see them staged under
# the real names.
STAGED_NAMES = {"hetrec-lastfm/listening_weights.fixture.dat": "hetrec-lastfm/user_artists.dat"}


@functools.lru_cache(maxsize=None)
def staged_raw_fixtures():
    """A temporary copy of tests/fixtures/raw with every file under its real raw name (one per session)."""
    root = Path(tempfile.mkdtemp(prefix="raw_fixtures_")) / "raw"
    shutil.copytree(RAW_FIXTURES, root)
    for kept, real in STAGED_NAMES.items():
        (root / kept).rename(root / real)
    atexit.register(shutil.rmtree, root.parent, True)
    return root


def same_metrics(a, b):
    """Equal result dicts, NaN equal to NaN (an empty or one-label cold bucket is NaN)."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)
