"""Building blocks of MCCA: the DIN-style activation unit and masked attention pooling.

``ActivationUnit`` scores every (history item e_j, query q) pair with a small feed-forward network that
outputs one unnormalised weight (DIN's "activation unit"; no softmax, as in DIN and the PSRQ paper),
zeroes the weights of padding positions, and returns the weighted sum  h = sum_j a(e_j, q) * e_j.

It works in two shapes with the same parameters:

* aligned: one query per history row, ``query`` (B, d) -> weights (B, T), pooled (B, d)
  (training / ``predict``: the query is the row's own target item);
* cross: C queries shared by every history row, ``query`` (C, d) with ``cross=True``
  -> weights (B, C, T), pooled (B, C, d) (``full_sort_predict``: every candidate item is a query).

The first layer is applied in decomposed form. DIN feeds a linear layer with the concatenation
[e, q] (``attention_input: concat``) or [e, q, e - q, e * q] (``attention_input: din``). A linear map of
[e, q] is W_e e + W_q q; a linear map of [e, q, e - q, e * q] is (W1 + W3) e + (W2 - W3) q + W4 (e * q),
i.e. exactly the function class W_e e + W_q q + W_p (e * q). Parametrising the layer that way computes
W_e e once per history position and W_q q once per query instead of once per (position, query) pair,
which makes full-sort scoring (C candidates x T positions) affordable; the model is the same.
"""
import torch
import torch.nn as nn

_ACTIVATIONS = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leakyrelu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "none": nn.Identity,
}
_INPLACE = {nn.Sigmoid: torch.Tensor.sigmoid_, nn.ReLU: torch.Tensor.relu_, nn.Tanh: torch.Tensor.tanh_,
            nn.Identity: lambda x: x}
ACTIVATIONS = tuple(_ACTIVATIONS)
ATTENTION_INPUTS = ("concat", "din")
WEIGHT_ACTIVATIONS = ("none", "sigmoid")


def activation_layer(name):
    key = str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; use one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[key]()


def length_mask(seq_len, max_len):
    """(B,) lengths -> (B, max_len) bool, True at real (non-padding) positions."""
    positions = torch.arange(max_len, device=seq_len.device)
    return positions.unsqueeze(0) < seq_len.unsqueeze(1)


class ActivationUnit(nn.Module):
    """DIN activation unit + masked weighted-sum pooling (see the module docstring).

    Args:
        embedding_size: d, the width of history and query embeddings.
        hidden_size: hidden layer widths of the unit, e.g. [80, 40] (DIN's); the output layer has width 1.
        attention_input: ``concat`` ([e, q]) or ``din`` ([e, q, e - q, e * q]).
        activation: hidden-layer activation (``sigmoid`` as in RecBole's DIN, ``relu``, ``prelu``, ...).
        weight_activation: ``none`` (raw weights, DIN's relaxed normalisation) or ``sigmoid``.
            Never softmax; padding positions get weight exactly 0 either way.
    """

    def __init__(self, embedding_size, hidden_size=(80, 40), attention_input="concat",
                 activation="sigmoid", weight_activation="none"):
        super().__init__()
        if attention_input not in ATTENTION_INPUTS:
            raise ValueError(f"attention_input must be one of {ATTENTION_INPUTS}, got {attention_input!r}")
        if weight_activation not in WEIGHT_ACTIVATIONS:
            raise ValueError(
                f"attention weight activation must be one of {WEIGHT_ACTIVATIONS}, got {weight_activation!r}")
        hidden_size = list(hidden_size)
        if not hidden_size:
            raise ValueError("attention_hidden_size needs at least one layer, e.g. [80, 40]")
        self.attention_input = attention_input
        self.weight_activation = weight_activation
        first = hidden_size[0]
        # decomposed first layer (module docstring): W_e e + b, W_q q, and W_p (e * q) for the din form
        self.key_proj = nn.Linear(embedding_size, first)
        self.query_proj = nn.Linear(embedding_size, first, bias=False)
        self.product_proj = (nn.Linear(embedding_size, first, bias=False)
                             if attention_input == "din" else None)
        layers = [activation_layer(activation)]
        for n_in, n_out in zip(hidden_size[:-1], hidden_size[1:]):
            layers += [nn.Linear(n_in, n_out), activation_layer(activation)]
        layers.append(nn.Linear(hidden_size[-1], 1))
        self.mlp = nn.Sequential(*layers)

    def _mlp(self, hidden):
        if torch.is_grad_enabled():
            return self.mlp(hidden)
        # inference (full sort): activations in place, saving one (B, C, T, H) temporary per layer
        for layer in self.mlp:
            if type(layer) in _INPLACE:
                hidden = _INPLACE[type(layer)](hidden)
            else:
                hidden = layer(hidden)
        return hidden

    def forward(self, keys, query, mask, cross=False, values=None):
        """
        Args:
            keys: (B, T, d) history embeddings.
            query: (B, d) one query per row, or (C, d) candidate queries with ``cross=True``.
            mask: (B, T) bool, True at real positions.
            values: (B, T, d_v) what is pooled, default ``keys``; MCCA's full sort pools the keys
                projected by its MLP's first layer (a linear map commutes with the weighted sum).
        Returns:
            pooled (B, d_v) / (B, C, d_v) and weights (B, T) / (B, C, T); weights are 0 at padding.
        """
        values = keys if values is None else values
        key_term = self.key_proj(keys)                         # (B, T, H)
        query_term = self.query_proj(query)                    # (B, H) or (C, H)
        if cross:
            hidden = key_term.unsqueeze(1) + query_term.unsqueeze(0).unsqueeze(2)  # (B, C, T, H)
            if self.product_proj is not None:
                hidden = hidden + self.product_proj(keys.unsqueeze(1) * query.unsqueeze(0).unsqueeze(2))
            weight_mask = mask.unsqueeze(1)                    # (B, 1, T)
        else:
            hidden = key_term + query_term.unsqueeze(1)        # (B, T, H)
            if self.product_proj is not None:
                hidden = hidden + self.product_proj(keys * query.unsqueeze(1))
            weight_mask = mask
        weights = self._mlp(hidden).squeeze(-1)                # (B, T) / (B, C, T)
        if self.weight_activation == "sigmoid":
            weights = torch.sigmoid(weights)
        weights = weights.masked_fill(~weight_mask, 0.0)
        if cross:
            pooled = torch.einsum("bct,btd->bcd", weights, values)
        else:
            pooled = torch.bmm(weights.unsqueeze(1), values).squeeze(1)
        return pooled, weights
