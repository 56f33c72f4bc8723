"""VQ: one flat k-means codebook, i.e. RQ-KMeans with a single level (the paper's Table 3 "VQ")."""
from recbole_psrq.errors import ConfigError
from recbole_psrq.quantization.residual import ResidualKMeansQuantizer


class VQQuantizer(ResidualKMeansQuantizer):
    name = "vq"
    DEFAULT_LEVELS = 1

    def _validate_options(self):
        if self.n_levels != 1:
            raise ConfigError(
                f"Quantizer 'vq' has exactly one level, got n_levels={self.n_levels}. Omit n_levels "
                "or set it to 1 (use 'rq_kmeans' or 'psrq' for several levels)."
            )
        super()._validate_options()
