"""RQ-VAE: an MLP auto-encoder whose latent is quantised by residual codebooks (the paper's Table 3
baseline, in the style of Lee et al. 2022 / TIGER).

encoder d -> hidden_dims -> latent_dim (ReLU between layers), L residual codebooks of k x latent_dim,
decoder mirrored. Loss = MSE(decoder(z_q), x) + sum_l [ ||sg(r_l) - e_l||^2 + beta ||r_l - sg(e_l)||^2 ]
with the straight-through estimator z_q = z + sg(sum_l e_l - z) and beta = 0.25 (commitment weight).
Codebooks are initialised by residual k-means on the latents of the first max(batch_size, k) shuffled
training rows. Codes are the residual nearest-codeword choices on the encoder latent; ``decode`` =
decoder(sum of chosen codewords).

Trained as a fair baseline, not for a fixed budget (issue 16):

- **Early stopping.** After every epoch the reconstruction MSE (the SID report's ``recon_mse``: mean
  over rows of ||x - decode(encode(x))||^2, quantised path, no gradient) is measured on the *whole*
  training sample. Training stops when ``patience`` epochs in a row brought no relative improvement of
  at least ``min_delta`` over the last such improvement, or after ``epochs`` (the maximum); the
  weights and codebooks of the epoch with the lowest MSE are restored. Why the training sample and not
  a held-out split: a quantizer is fitted on the very catalogue it encodes (it never sees unseen items
  at encode time in this project), so the error that matters is the error on those items; a held-out
  split would also train the RQ-VAE on fewer rows than the k-means quantizers it is compared with. The
  pass is forward-only, so it costs about a third of a training epoch, and it is deterministic.
- **Dead-code revival** (``revive_dead_codes``, on by default; the standard fix, as in Jukebox and
  vector-quantize-pytorch's ``threshold_ema_dead_code``): in the same pass each level counts how often
  each code is chosen; a code chosen by no training row for that epoch is re-initialised to the
  level-l residual (encoder output minus the codewords chosen at levels < l, current weights) of a
  training row drawn at random without replacement, and its Adam moments are zeroed. The number
  revived per level is logged (debug, per epoch) and summed in ``training_summary``.
- **Codebook usage.** After fitting, ``codebook_usage`` holds per level the share of the k codes used
  by the fit data's codes and the perplexity (exp entropy) of their distribution, the same definitions
  as the SID report's ``utilization`` / ``perplexity``; it is saved and loaded with the quantizer, as
  is ``training_summary`` (epochs run, best epoch, why it stopped, best recon MSE, the recon MSE
  after each epoch, revived codes per level).

Training uses the same seeded training sample as the k-means quantizers (``max_train_points``) and
runs under ``torch.random.fork_rng`` with ``torch.manual_seed(seed)`` and a seeded generator for the
batch order and the revival draws, so a fixed seed gives identical codes without touching the
caller's global torch RNG. torch is imported only when an RQ-VAE is fitted or loaded, keeping
``import recbole_psrq.quantization`` light.
"""
import copy
import json
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
        "epochs": 200,  # the maximum; early stopping (patience / min_delta) usually ends sooner
        "patience": 10,
        "min_delta": 1e-3,  # relative: an epoch improves if mse < (1 - min_delta) * reference
        "revive_dead_codes": True,
        "batch_size": 1024,
        "lr": 1e-3,
        "beta": 0.25,
    }

    codebook_usage = None  # {"used_share": [L], "perplexity": [L], "used_codes": [L]} after fit
    training_summary = None  # epochs run, best epoch, stop reason, recon MSE, revived codes

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
        for option in ("latent_dim", "epochs", "batch_size", "patience"):
            self._check_int(option, self.options[option], minimum=1)
        for option in ("lr", "beta"):
            value = self.options[option]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"Quantizer 'rq_vae': {option} must be a number > 0, got {value!r}.")
        value = self.options["min_delta"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(
                f"Quantizer 'rq_vae': min_delta (a relative improvement) must be a number in [0, 1), "
                f"got {value!r}."
            )
        if not isinstance(self.options["revive_dead_codes"], bool):
            raise ConfigError(
                "Quantizer 'rq_vae': revive_dead_codes must be true or false, got "
                f"{self.options['revive_dead_codes']!r}."
            )

    def fit(self, X):
        # torch must be loaded before Quantizer.fit enters limit_threads, or its threads go unlimited
        import torch  # noqa: F401

        super().fit(X)
        self.codebook_usage = codebook_usage(self.encode(X), self.codebook_size)
        logger.info("rq_vae codebook usage on the fit data: used share %s, perplexity %s",
                    " / ".join(f"{u:.3f}" for u in self.codebook_usage["used_share"]),
                    " / ".join(f"{p:.1f}" for p in self.codebook_usage["perplexity"]))
        return self

    def _fit(self, X):
        import torch

        sample = torch.from_numpy(self._training_sample(X, self.max_train_points))
        max_epochs, patience = self.options["epochs"], self.options["patience"]
        min_delta, revive = self.options["min_delta"], self.options["revive_dead_codes"]
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            generator = torch.Generator().manual_seed(self.seed)
            self.net = _build_autoencoder(self.dim, self.options["hidden_dims"],
                                          self.options["latent_dim"])
            init_rows = torch.randperm(len(sample), generator=generator)
            init_rows = init_rows[:max(self.options["batch_size"], self.codebook_size)]
            codebooks = torch.nn.Parameter(torch.from_numpy(self._init_codebooks(sample[init_rows])))
            optimizer = torch.optim.Adam([*self.net.parameters(), codebooks], lr=self.options["lr"])
            best_mse, best_epoch, best_state = float("inf"), 0, None
            reference, stale = float("inf"), 0  # MSE of the last significant improvement
            revived_total = np.zeros(self.n_levels, dtype=np.int64)
            history = []  # recon MSE after each epoch
            stop_reason = f"reached the maximum of {max_epochs} epochs"
            fit_start = time.perf_counter()
            for epoch in range(1, max_epochs + 1):
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
                mse, counts = self._evaluate(sample, codebooks)
                history.append(mse)
                if mse < best_mse:
                    best_mse, best_epoch = mse, epoch
                    best_state = (copy.deepcopy(self.net.state_dict()), codebooks.detach().clone())
                if mse < (1.0 - min_delta) * reference:
                    reference, stale = mse, 0
                else:
                    stale += 1
                stopping = stale >= patience
                revived = [0] * self.n_levels
                if revive and not stopping and epoch < max_epochs:
                    revived = self._revive_dead_codes(sample, codebooks, counts, optimizer,
                                                      generator)
                    revived_total += revived
                logger.debug("rq_vae epoch %d/%d: loss %.5f, recon MSE %.5f (best %.5f at epoch "
                             "%d), codes used per level %s, revived %s, in %.1f s", epoch,
                             max_epochs, total / len(sample), mse, best_mse, best_epoch,
                             [int((c > 0).sum()) for c in counts], revived,
                             time.perf_counter() - start)
                if stopping:
                    stop_reason = (f"no relative improvement of at least {min_delta:g} in the "
                                   f"reconstruction MSE for {patience} epochs")
                    break
        net_state, best_codebooks = best_state
        self.net.load_state_dict(net_state)
        self.codebooks = best_codebooks.numpy().copy()
        self.training_summary = {
            "epochs_run": epoch,
            "max_epochs": max_epochs,
            "best_epoch": best_epoch,
            "stop_reason": stop_reason,
            "recon_mse": best_mse,
            "revived_codes": revived_total.tolist(),
            "recon_mse_per_epoch": history,
            "train_seconds": time.perf_counter() - fit_start,
        }
        logger.info("rq_vae trained %d epochs (%s); kept epoch %d, recon MSE %.5f on %d training "
                    "rows; revived dead codes per level %s", epoch, stop_reason, best_epoch,
                    best_mse, len(sample), revived_total.tolist())

    def _evaluate(self, sample, codebooks):
        """Reconstruction MSE (mean over rows of the squared L2 error, quantised path) on
        ``sample`` and the per-level code counts (L, k), without gradients."""
        import torch

        step = self.options["chunk_size"]
        counts = np.zeros((self.n_levels, self.codebook_size), dtype=np.int64)
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(sample), step):
                x = sample[start:start + step]
                quantized, codes, _ = _residual_quantize(self.net.encoder(x), codebooks,
                                                         self.options["beta"])
                total += float(((self.net.decoder(quantized) - x) ** 2).sum(dtype=torch.float64))
                for level in range(self.n_levels):
                    counts[level] += np.bincount(codes[:, level].numpy(),
                                                 minlength=self.codebook_size)
        return total / len(sample), counts

    def _revive_dead_codes(self, sample, codebooks, counts, optimizer, generator):
        """Re-initialise each code with a zero count to the level's residual of a random training
        row (drawn without replacement per level); returns the number revived per level."""
        import torch

        dead_per_level = [np.flatnonzero(level_counts == 0) for level_counts in counts]
        revived = [len(dead) for dead in dead_per_level]
        if not any(revived):
            return revived
        rows = [torch.randperm(len(sample), generator=generator)[:n] for n in revived]
        with torch.no_grad():
            chosen = torch.cat(rows)
            residual = self.net.encoder(sample[chosen])
            offset, residuals = 0, []
            for level, codebook in enumerate(codebooks):  # residuals with the pre-revival codebooks
                residuals.append(residual[offset:offset + revived[level]].clone())
                offset += revived[level]
                index = _nearest(residual, codebook)
                residual = residual - codebook[index]
            state = optimizer.state.get(codebooks, {})
            for level, dead in enumerate(dead_per_level):
                if len(dead):
                    dead = torch.from_numpy(dead)
                    codebooks[level, dead] = residuals[level]
                    for moment in ("exp_avg", "exp_avg_sq"):
                        if moment in state:
                            state[moment][level, dead] = 0.0
        return revived

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
        state = {"codebooks": self.codebooks, **weights}
        for key in ("codebook_usage", "training_summary"):
            if getattr(self, key) is not None:
                state[key] = np.array(json.dumps(getattr(self, key)))
        return state

    def _load_state(self, arrays):
        import torch

        self.codebooks = arrays["codebooks"]
        self.net = _build_autoencoder(self.dim, self.options["hidden_dims"],
                                      self.options["latent_dim"])
        self.net.load_state_dict({k[len("net."):]: torch.from_numpy(arrays[k])
                                  for k in arrays if k.startswith("net.")})
        # files written before issue 16 have neither entry: both stay None
        for key in ("codebook_usage", "training_summary"):
            if key in arrays:
                setattr(self, key, json.loads(str(arrays[key])))


def codebook_usage(codes, codebook_size):
    """Per level of ``codes`` (N, L): the share of the ``codebook_size`` codes used, the perplexity
    (exp of the entropy) of the code distribution and the number of codes used; the same
    definitions as the SID report's ``utilization`` and ``perplexity``."""
    usage = {"used_share": [], "perplexity": [], "used_codes": []}
    for level_codes in np.asarray(codes).T:
        counts = np.bincount(level_codes, minlength=codebook_size)
        p = counts[counts > 0] / len(level_codes)
        usage["used_codes"].append(int((counts > 0).sum()))
        usage["used_share"].append(int((counts > 0).sum()) / codebook_size)
        usage["perplexity"].append(float(np.exp(-(p * np.log(p)).sum())))
    return usage


def _nearest(residual, codebook):
    """Index of the nearest codeword of ``codebook`` (k, h) for each row of ``residual`` (B, h)."""
    distances = (residual ** 2).sum(1, keepdim=True) - 2 * residual @ codebook.T \
        + (codebook ** 2).sum(1)
    return distances.argmin(1)


def _residual_quantize(latent, codebooks, beta):
    """Residual nearest-codeword quantisation of ``latent`` (B, h) with ``codebooks`` (L, k, h).
    Returns (sum of chosen codewords, int64 codes (B, L), codebook + commitment loss)."""
    import torch

    residual = latent
    quantized = torch.zeros_like(latent)
    codes, loss = [], latent.new_zeros(())
    for codebook in codebooks:
        index = _nearest(residual.detach(), codebook)
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
