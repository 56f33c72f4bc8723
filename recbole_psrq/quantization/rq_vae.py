"""RQ-VAE: an MLP auto-encoder whose latent is quantised by residual codebooks (the paper's Table 3
baseline, in the style of Lee et al. 2022 / TIGER).

encoder d -> hidden_dims -> latent_dim (ReLU between layers), L residual codebooks of k x latent_dim,
decoder mirrored. Loss = MSE(decoder(z_q), x) + sum_l [ ||sg(r_l) - e_l||^2 + beta ||r_l - sg(e_l)||^2 ]
with the straight-through estimator z_q = z + sg(sum_l e_l - z) and beta = 0.25 (commitment weight).
Codebooks are initialised by residual k-means on the latents of the first max(batch_size, k) shuffled
training rows. No dead-code reset (the paper does not mention one). Codes are the residual
nearest-codeword choices on the encoder latent; ``decode`` = decoder(sum of chosen codewords).

Training uses the same seeded training sample as the k-means quantizers (``max_train_points``) and
runs under ``torch.random.fork_rng`` with ``torch.manual_seed(seed)``, so a fixed seed gives
identical codes without touching the caller's global torch RNG. torch is imported only when an
RQ-VAE is fitted or loaded, keeping ``import recbole_psrq.quantization`` light.
"""
import logging
import time

import numpy as np

from recbole_psrq.errors import ConfigError
from recbole_psrq.quantization.base import KMeansQuantizer
from recbole_psrq.quantization.kmeans import nearest_centroid

logger = logging.getLogger(__name__)


class RQVAEQuantizer(KMeansQuantizer):
    name = "rq_vae"
    OPTIONS = {
        **KMeansQuantizer.OPTIONS,  # niter / nredo / max_train_points for the codebook init
        "hidden_dims": [512, 256],
        "latent_dim": 64,
        "epochs": 20,
        "batch_size": 1024,
        "lr": 1e-3,
        "beta": 0.25,
    }

    def _validate_options(self):
        super()._validate_options()
        hidden = self.options["hidden_dims"]
        if not isinstance(hidden, (list, tuple)) or not all(
            isinstance(h, (int, np.integer)) and h >= 1 for h in hidden
        ):
            raise ConfigError(
                f"Quantizer 'rq_vae': hidden_dims must be a list of positive integers, got {hidden!r}."
            )
        self.options["hidden_dims"] = [int(h) for h in hidden]
        for option in ("latent_dim", "epochs", "batch_size"):
            self._check_int(option, self.options[option], minimum=1)
        for option in ("lr", "beta"):
            value = self.options[option]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"Quantizer 'rq_vae': {option} must be a number > 0, got {value!r}.")

    def fit(self, X):
        # torch must be loaded before Quantizer.fit enters limit_threads, or its threads go unlimited
        import torch  # noqa: F401

        return super().fit(X)

    def _fit(self, X):
        import torch

        sample = torch.from_numpy(self._training_sample(X, self.max_train_points))
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            generator = torch.Generator().manual_seed(self.seed)
            self.net = _build_autoencoder(self.dim, self.options["hidden_dims"],
                                          self.options["latent_dim"])
            init_rows = torch.randperm(len(sample), generator=generator)
            init_rows = init_rows[:max(self.options["batch_size"], self.codebook_size)]
            codebooks = torch.nn.Parameter(torch.from_numpy(self._init_codebooks(sample[init_rows])))
            optimizer = torch.optim.Adam([*self.net.parameters(), codebooks], lr=self.options["lr"])
            for epoch in range(self.options["epochs"]):
                start, total = time.perf_counter(), 0.0
                for batch in torch.randperm(len(sample), generator=generator).split(
                        self.options["batch_size"]):
                    x = sample[batch]
                    latent = self.net.encoder(x)
                    quantized, _, codebook_loss = _residual_quantize(latent, codebooks,
                                                                     self.options["beta"])
                    straight_through = latent + (quantized - latent).detach()
                    loss = torch.nn.functional.mse_loss(self.net.decoder(straight_through), x)
                    loss = loss + codebook_loss
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(batch)
                logger.info("rq_vae epoch %d/%d: loss %.5f in %.1f s", epoch + 1,
                            self.options["epochs"], total / len(sample), time.perf_counter() - start)
        self.codebooks = codebooks.detach().numpy().copy()

    def _init_codebooks(self, rows):
        """(L, k, latent) residual k-means codebooks on the encoder latents of ``rows``."""
        import torch

        with torch.no_grad():
            residual = self.net.encoder(rows).numpy().copy()
        codebooks = []
        for level in range(self.n_levels):
            centroids = self._train_codebook(residual, level)
            residual -= centroids[nearest_centroid(residual, centroids)]
            codebooks.append(centroids)
        return np.stack(codebooks)

    def _encode_chunk(self, x):
        import torch

        with torch.no_grad():
            latent = self.net.encoder(torch.from_numpy(x))
            _, codes, _ = _residual_quantize(latent, torch.from_numpy(self.codebooks),
                                             self.options["beta"])
        return codes.numpy()

    def _decode(self, codes):
        import torch

        step = self.options["chunk_size"]
        parts = []
        with torch.no_grad():
            for start in range(0, len(codes), step):
                chunk = codes[start:start + step]
                latent = sum(torch.from_numpy(self.codebooks[level][chunk[:, level]])
                             for level in range(codes.shape[1]))
                parts.append(self.net.decoder(latent).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def _state(self):
        weights = {f"net.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()}
        return {"codebooks": self.codebooks, **weights}

    def _load_state(self, arrays):
        import torch

        self.codebooks = arrays["codebooks"]
        self.net = _build_autoencoder(self.dim, self.options["hidden_dims"],
                                      self.options["latent_dim"])
        self.net.load_state_dict({k[len("net."):]: torch.from_numpy(arrays[k])
                                  for k in arrays if k.startswith("net.")})


def _residual_quantize(latent, codebooks, beta):
    """Residual nearest-codeword quantisation of ``latent`` (B, h) with ``codebooks`` (L, k, h).
    Returns (sum of chosen codewords, int64 codes (B, L), codebook + commitment loss)."""
    import torch

    residual = latent
    quantized = torch.zeros_like(latent)
    codes, loss = [], latent.new_zeros(())
    for codebook in codebooks:
        distances = (residual.detach() ** 2).sum(1, keepdim=True) \
            - 2 * residual.detach() @ codebook.T + (codebook ** 2).sum(1)
        index = distances.argmin(1)
        chosen = codebook[index]
        loss = loss + torch.nn.functional.mse_loss(chosen, residual.detach()) \
            + beta * torch.nn.functional.mse_loss(residual, chosen.detach())
        quantized = quantized + chosen
        residual = residual - chosen.detach()
        codes.append(index)
    return quantized, torch.stack(codes, 1).to(torch.int64), loss


def _build_autoencoder(dim, hidden_dims, latent_dim):
    import torch

    def mlp(sizes):
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers)

    net = torch.nn.Module()
    net.encoder = mlp([dim, *hidden_dims, latent_dim])
    net.decoder = mlp([latent_dim, *reversed(hidden_dims), dim])
    return net
