"""Semantic-ID quantizers (PSRQ, RQ-KMeans, RQ-VAE, VQ, PQ, OPQ) and the SID quality report.

    quantizer = build_quantizer("psrq", n_levels=3, codebook_size=256, seed=0)
    codes = quantizer.fit(X).encode(X)          # int64 (N, 3), values in [0, 256)
    quantizer.save("text.psrq.npz"); quantizer = load_quantizer("text.psrq.npz")
    report = sid_quality_report(X, codes, labels=genres, quantizer=quantizer)
"""
import json

import numpy as np

from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.quantization.base import FORMAT_VERSION, Quantizer
from recbole_psrq.quantization.pq import OPQQuantizer, ProductQuantizer
from recbole_psrq.quantization.report import sid_quality_report
from recbole_psrq.quantization.residual import PSRQQuantizer, ResidualKMeansQuantizer
from recbole_psrq.quantization.rq_vae import RQVAEQuantizer
from recbole_psrq.quantization.vq import VQQuantizer

#: name -> quantizer class; the keys are the names ``build_quantizer`` accepts.
QUANTIZERS = {
    cls.name: cls
    for cls in (PSRQQuantizer, ResidualKMeansQuantizer, RQVAEQuantizer, VQQuantizer,
                ProductQuantizer, OPQQuantizer)
}


def build_quantizer(name, n_levels=None, codebook_size=256, seed=0, **options):
    """An unfitted quantizer. ``n_levels=None`` takes the quantizer's paper setting (3 for the
    residual ones, 4 for PQ/OPQ, 1 for VQ). ``options`` are quantizer-specific (e.g. ``niter``,
    ``max_train_points``, ``chunk_size``, ``normalize``, ``prefix_weight`` for PSRQ, ``epochs`` for
    RQ-VAE); an unknown option raises ConfigError listing the allowed ones."""
    if name not in QUANTIZERS:
        raise ConfigError(
            f"Unknown quantizer {name!r}. Available quantizers: {sorted(QUANTIZERS)}."
        )
    return QUANTIZERS[name](n_levels=n_levels, codebook_size=codebook_size, seed=seed, **options)


def load_quantizer(path):
    """A fitted quantizer from a file written by ``Quantizer.save``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{path}: not a readable quantizer file ({e}).") from e
    if "config" not in arrays:
        raise DataFormatError(f"{path}: no 'config' entry; it was not written by Quantizer.save.")
    config = json.loads(str(arrays.pop("config")))
    if config.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(
            f"{path}: quantizer file format {config.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}; refit and save the quantizer again."
        )
    quantizer = build_quantizer(config["quantizer"], n_levels=config["n_levels"],
                                codebook_size=config["codebook_size"], seed=config["seed"],
                                **config["options"])
    quantizer.restore(config["dim"], arrays)
    return quantizer


__all__ = ["QUANTIZERS", "Quantizer", "build_quantizer", "load_quantizer", "sid_quality_report"]
