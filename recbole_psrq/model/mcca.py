"""MCCA: Multi-Codebook Cross-Attention (the PSRQ paper's stage 2, S. Wang et al., CIKM 2025).

A RecBole ``SequentialRecommender`` for binary (CTR) prediction: logit = MLP([h_text, h_audio, h_joint,
h_id, e_id(target), e_joint(target)]), trained with BCE on the config's ``LABEL_FIELD``.

Inputs
------
Item features ``text_sid``, ``audio_sid``, ``joint_sid``: RecBole ``token_seq`` fields holding one
level-prefixed token per SID level (raw ``"l1_12 l2_5 l3_40"``). RecBole remaps each field's tokens to
ids 1..V-1 (0 = padding). They are produced by the project's SID hook (config ``sid_modalities``) or
read from ``.item`` columns.

Embedding tables
----------------
The paper has one table E^z_j per codebook z and level j and sums over levels:
e^z_i = sum_j E^z_j[a^z_ij]. Because every token carries its level prefix (``l1_12`` and ``l2_12`` are
different tokens), the per-level vocabularies of a field are disjoint, so ONE
``nn.Embedding(dataset.num(f"{z}_sid"), d)`` indexed by the field's token ids and summed over the L
positions is exactly the concatenation of the L per-level tables E^z_1..E^z_L, summed over levels.
Tables are randomly initialised and trained; codebook centroids are not used. Plus an item-ID table e^r.

Attention (DIN-style, :class:`recbole_psrq.model.layers.ActivationUnit`)
-----------------------------------------------------------------------
History = the row's ``item_id_list`` (with the project's ctr protocol: the user's <= 20 most recent
earlier *positive* rows, see :mod:`recbole_psrq.data.history`); history SID / ID embeddings are looked
up from the item feature table by item id, as SASRecF does. Separate activation units per branch.

Variants and the ablation policy
--------------------------------
A variant is the set of SID codebooks it keeps (``VARIANTS``); everything else follows from three rules,
so an ablation differs from the full model only in the codebook it removes:

1. **Branches**: one attention branch per kept codebook, plus the ID branch (query e^id_t) always.
2. **Query** of every SID branch: the target's joint SID embedding e^joint_t (the paper's shared
   multimodal-joint query) when the joint codebook is kept; without it, each branch's own codebook's
   target embedding (e^text_t for text, e^audio_t for audio) -- the SPEC's definition of w/o MJC, and
   the only target content such a variant has.
3. **MLP input**: the pooled history of every branch, e_id_t, and e^joint_t when the joint codebook is
   kept -- the paper's target features. The modal-specific target embeddings are never MLP inputs (the
   paper's full model has none), so removing a codebook removes its table, its branch and every use of
   its embedding (as query, as MLP input) and substitutes nothing in the MLP.

* full:    text, audio, joint. Queries: e^joint_t for the three SID branches.
           MLP [h_text, h_audio, h_joint, h_id, e_id_t, e_joint_t] (the paper's model).
* wo_msc:  ("w/o modal-specific codebooks") joint only; no text/audio tables or units exist.
           Query e^joint_t. MLP [h_joint, h_id, e_id_t, e_joint_t].
* wo_mjc:  ("w/o modal-joint codebook") text, audio; no joint table or unit. Queries e^text_t,
           e^audio_t. MLP [h_text, h_audio, h_id, e_id_t]: full minus h_joint and e_joint_t.

So full vs wo_mjc measures the joint codebook in all three of its roles (history branch, shared query,
target feature); its query role cannot be removed without the substitution in rule 2.

Weights are not softmax-normalised; padding positions are masked to weight 0 (``attention_weight``:
``none`` = raw DIN weights, ``sigmoid`` = weights in (0, 1)).

``full_sort_predict`` scores every item for each history row. The query is the candidate, so the
attention is recomputed per candidate; it is done in chunks of at most ``full_sort_chunk_size``
(history row, candidate) pairs, so peak memory is O(chunk x T x hidden), independent of the catalogue
size. Its scores equal ``predict`` on the same (row, item) pairs (eval mode).
"""
import torch
import torch.nn as nn
from torch.nn.init import constant_, xavier_normal_

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import FeatureSource, FeatureType, InputType

from recbole_psrq.errors import ConfigError
from recbole_psrq.model.layers import (ACTIVATIONS, ATTENTION_INPUTS, WEIGHT_ACTIVATIONS, ActivationUnit,
                                      length_mask)

# variant -> the SID codebooks it keeps; branches, queries and MLP inputs follow (module docstring)
VARIANTS = {
    "full": ("text", "audio", "joint"),
    "wo_msc": ("joint",),
    "wo_mjc": ("text", "audio"),
}


def sid_field(codebook):
    return f"{codebook}_sid"


class MCCA(SequentialRecommender):
    """Multi-Codebook Cross-Attention (module docstring). Config keys (``properties/model/MCCA.yaml``):
    ``embedding_size``, ``mcca_variant`` (full | wo_msc | wo_mjc), ``attention_hidden_size``,
    ``attention_input`` (concat | din), ``attention_activation``, ``attention_weight`` (none | sigmoid),
    ``mlp_hidden_size``, ``dropout_prob``, ``full_sort_chunk_size``."""

    input_type = InputType.POINTWISE
    protocol = "ctr"  # the runner's default protocol for this model

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL_FIELD = config["LABEL_FIELD"]
        self.embedding_size = int(config["embedding_size"] or 64)
        self.variant = config["mcca_variant"] or "full"
        if self.variant not in VARIANTS:
            raise ConfigError(f"Unknown mcca_variant '{self.variant}'; use one of "
                              f"{', '.join(VARIANTS)} (full = PSRQ+MCCA, wo_msc = w/o modal-specific "
                              "codebooks, wo_mjc = w/o modal-joint codebook).")
        self.attention_input = config["attention_input"] or "concat"
        if self.attention_input not in ATTENTION_INPUTS:
            raise ConfigError(f"Unknown attention_input '{self.attention_input}'; use one of "
                              f"{', '.join(ATTENTION_INPUTS)}.")
        weight_activation = config["attention_weight"] or "none"
        if weight_activation not in WEIGHT_ACTIVATIONS:
            raise ConfigError(f"Unknown attention_weight '{weight_activation}'; use one of "
                              f"{', '.join(WEIGHT_ACTIVATIONS)} (the paper uses no softmax).")
        self.attention_hidden_size = list(config["attention_hidden_size"] or [80, 40])
        self.mlp_hidden_size = list(config["mlp_hidden_size"] or [256, 128])
        self.dropout_prob = float(config["dropout_prob"] or 0.0)
        self.full_sort_chunk_size = int(config["full_sort_chunk_size"] or 1024)
        attention_activation = str(config["attention_activation"] or "sigmoid").lower()
        if attention_activation not in ACTIVATIONS:
            raise ConfigError(f"Unknown attention_activation '{attention_activation}'; use one of "
                              f"{', '.join(ACTIVATIONS)}.")

        self.codebooks = VARIANTS[self.variant]
        self.branches = self.codebooks                                            # rule 1
        self.target_codebooks = ("joint",) if "joint" in self.codebooks else ()   # rule 3
        # names of the MLP's input blocks, in concatenation order (h_*: pooled histories, e_*: target)
        self.mlp_inputs = tuple([f"h_{b}" for b in self.branches] + ["h_id", "e_id"] +
                                [f"e_{z}" for z in self.target_codebooks])
        sid_tokens = self._check_sid_fields(config, dataset)

        d = self.embedding_size
        # item id -> (L,) SID token ids per codebook; rebuilt from the dataset, not saved in checkpoints
        for z in self.codebooks:
            self.register_buffer(f"{z}_sid_tokens", sid_tokens[z].clone(), persistent=False)
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        # one table per codebook over level-prefixed tokens == one table per (codebook, level), summed
        self.sid_embedding = nn.ModuleDict({
            z: nn.Embedding(dataset.num(sid_field(z)), d, padding_idx=0) for z in self.codebooks
        })
        unit = dict(hidden_size=self.attention_hidden_size, attention_input=self.attention_input,
                    activation=attention_activation, weight_activation=weight_activation)
        self.attention = nn.ModuleDict({z: ActivationUnit(d, **unit) for z in self.branches})
        self.attention["id"] = ActivationUnit(d, **unit)

        mlp_in = len(self.mlp_inputs) * d
        layers = []
        for n_in, n_out in zip([mlp_in] + self.mlp_hidden_size[:-1], self.mlp_hidden_size):
            layers += [nn.Dropout(self.dropout_prob), nn.Linear(n_in, n_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.predict_layer = nn.Linear(self.mlp_hidden_size[-1] if self.mlp_hidden_size else mlp_in, 1)
        self.loss = nn.BCEWithLogitsLoss()

        self.apply(self._init_weights)

    # ------------------------------------------------------------------ setup
    def _check_sid_fields(self, config, dataset):
        item_feat = dataset.get_item_feature()
        for z in self.codebooks:
            field = sid_field(z)
            ok = (field in dataset.field2type and dataset.field2source.get(field) == FeatureSource.ITEM
                  and dataset.field2type[field] in (FeatureType.TOKEN_SEQ, FeatureType.TOKEN)
                  and item_feat is not None and field in item_feat.interaction)
            if not ok:
                raise ConfigError(
                    f"MCCA (mcca_variant={self.variant}) needs the item feature field '{field}' "
                    f"(the {z} semantic ID: a token_seq of level-prefixed tokens such as "
                    f"'l1_12 l2_5 l3_40'), but dataset '{config['dataset']}' has no such item field. "
                    f"Add it by listing '{z}' in `sid_modalities` (e.g. `sid_modalities: "
                    f"[text, audio, joint]`) in the dataset or model yaml, with the item embeddings in "
                    f"`sid_embedding_files`; or put a '{field}:token_seq' column into the .item file "
                    f"and list '{field}' under load_col.item."
                )
        tokens = {}
        for z in self.codebooks:
            table = item_feat[sid_field(z)].long()
            tokens[z] = table.unsqueeze(1) if table.dim() == 1 else table  # a TOKEN field: 1 level
        return tokens

    def _init_weights(self, module):
        if isinstance(module, nn.Embedding):
            xavier_normal_(module.weight.data)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            xavier_normal_(module.weight.data)
            if module.bias is not None:
                constant_(module.bias.data, 0)

    # ------------------------------------------------------------------ embeddings
    def sid_embed(self, codebook, items):
        """Sum over levels of the codebook's SID token embeddings of ``items`` (any shape) -> (..., d)."""
        tokens = getattr(self, f"{codebook}_sid_tokens")[items]         # (..., L)
        return self.sid_embedding[codebook](tokens).sum(dim=-2)

    def _history(self, item_seq):
        hist = {z: self.sid_embed(z, item_seq) for z in self.branches}
        hist["id"] = self.item_embedding(item_seq)
        return hist

    def _targets(self, items):
        target = {z: self.sid_embed(z, items) for z in self.codebooks}
        target["id"] = self.item_embedding(items)
        return target

    def _query(self, branch, target):
        if branch == "id":
            return target["id"]
        return target["joint"] if "joint" in self.codebooks else target[branch]

    def _logits(self, hist, mask, target, cross=False, return_weights=False):
        blocks, weights = {}, {}
        for branch in list(self.branches) + ["id"]:
            blocks[f"h_{branch}"], weights[branch] = self.attention[branch](
                hist[branch], self._query(branch, target), mask, cross=cross)
        for z in ["id", *self.target_codebooks]:
            # cross: (C, d) candidate embeddings broadcast over the B history rows
            blocks[f"e_{z}"] = target[z].unsqueeze(0).expand(blocks["h_id"].shape[0], -1, -1) \
                if cross else target[z]
        mlp_input = torch.cat([blocks[name] for name in self.mlp_inputs], dim=-1)
        logits = self.predict_layer(self.mlp(mlp_input)).squeeze(-1)
        return (logits, weights) if return_weights else logits

    # ------------------------------------------------------------------ RecBole API
    def forward(self, item_seq, item_seq_len, target_items, return_weights=False):
        """Logits (B,) for the rows' own targets; with ``return_weights`` also the attention weights
        per branch, (B, T) each, 0 at padding positions."""
        mask = length_mask(item_seq_len, item_seq.shape[1])
        return self._logits(self._history(item_seq), mask, self._targets(target_items),
                            return_weights=return_weights)

    def calculate_loss(self, interaction):
        logits = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                              interaction[self.POS_ITEM_ID])
        return self.loss(logits, interaction[self.LABEL_FIELD].float())

    def predict(self, interaction):
        return torch.sigmoid(self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                          interaction[self.POS_ITEM_ID]))

    def full_sort_predict(self, interaction):
        """Scores (B, n_items) of every item for every history row, computed in chunks of at most
        ``full_sort_chunk_size`` (row, item) pairs; equals ``predict`` on each (row, item) pair."""
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        n_rows = item_seq.shape[0]
        budget = max(1, self.full_sort_chunk_size)
        item_chunk = max(1, min(self.n_items, budget))
        row_chunk = max(1, budget // item_chunk)
        all_items = torch.arange(self.n_items, device=item_seq.device)
        scores = torch.empty(n_rows, self.n_items, device=item_seq.device)
        for r0 in range(0, n_rows, row_chunk):
            seq, seq_len = item_seq[r0:r0 + row_chunk], item_seq_len[r0:r0 + row_chunk]
            hist = self._history(seq)
            mask = length_mask(seq_len, seq.shape[1])
            for c0 in range(0, self.n_items, item_chunk):
                target = self._targets(all_items[c0:c0 + item_chunk])
                logits = self._logits(hist, mask, target, cross=True)
                scores[r0:r0 + row_chunk, c0:c0 + item_chunk] = torch.sigmoid(logits)
        return scores
