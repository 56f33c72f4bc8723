"""MCCA: Multi-Codebook Cross-Attention (the PSRQ paper's stage 2, S. Wang et al., CIKM 2025).

A RecBole ``SequentialRecommender`` for binary (CTR) prediction: logit = MLP([h_m for each content
modality m, h_joint, h_id, e_id(target), e_joint(target)]), trained with BCE on the config's
``LABEL_FIELD``. The paper's model is the case m in (text, audio).

Inputs
------
Item features ``<m>_sid`` for each modality m of ``mcca_modalities`` (default ``~``: every modality the
dataset declares in ``sid_embedding_files``, in declaration order, e.g. ``text_sid``, ``audio_sid``)
and ``joint_sid``: RecBole ``token_seq`` fields holding one level-prefixed token per SID level (raw
``"l1_12 l2_5 l3_40"``). RecBole remaps each field's tokens to ids 1..V-1 (0 = padding). They are
produced by the project's SID hook (config ``sid_modalities``; ``MCCA.yaml`` sets ``all``, so MCCA
runs on any dataset that declares its embedding files) or read from ``.item`` columns.

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
A variant is the set of SID codebooks it keeps (:func:`variant_codebooks`); everything else follows
from three rules, so an ablation differs from the full model only in the codebook it removes:

1. **Branches**: one attention branch per kept codebook, plus the ID branch (query e^id_t) always.
2. **Query** of every SID branch: the target's joint SID embedding e^joint_t (the paper's shared
   multimodal-joint query) when the joint codebook is kept; without it, each branch's own codebook's
   target embedding (e^text_t for text, e^audio_t for audio, ...) -- the SPEC's definition of w/o MJC,
   and the only target content such a variant has.
3. **MLP input**: the pooled history of every branch, e_id_t, and e^joint_t when the joint codebook is
   kept -- the paper's target features. The modal-specific target embeddings are never MLP inputs (the
   paper's full model has none), so removing a codebook removes its table, its branch and every use of
   its embedding (as query, as MLP input) and substitutes nothing in the MLP.

With modalities M (in ``mcca_modalities`` order):

* full:    every m in M, then joint. Queries: e^joint_t for every SID branch.
           MLP [h_m for m in M, h_joint, h_id, e_id_t, e_joint_t] (the paper's model for M = text, audio).
* wo_msc:  ("w/o modal-specific codebooks") joint only; no modal tables or units exist.
           Query e^joint_t. MLP [h_joint, h_id, e_id_t, e_joint_t].
* wo_mjc:  ("w/o modal-joint codebook") every m in M; no joint table or unit. Query of branch m: e^m_t.
           MLP [h_m for m in M, h_id, e_id_t]: full minus h_joint and e_joint_t.

So full vs wo_mjc measures the joint codebook in all three of its roles (history branch, shared query,
target feature); its query role cannot be removed without the substitution in rule 2.

**One modality.** The joint SID of a single modality is that modality's SID (the SID hook fits it
once; ``sid_joint_modalities``, default every declared modality). A modal-specific codebook equal to
the joint one would hold the same codes twice, so MCCA keeps it once, as the joint codebook: on a
text-only dataset full = wo_msc = one SID branch over the text SID (query and MLP target feature
e^joint_t = the text SID embedding) plus the ID branch; wo_mjc = the text branch with query e^text_t
and no SID target feature. With two or more joint modalities every codebook is distinct.

Weights are not softmax-normalised; padding positions are masked to weight 0 (``attention_weight``:
``none`` = raw DIN weights, ``sigmoid`` = weights in (0, 1)).

Full sort
---------
``full_sort_predict`` scores every item for each history row, in chunks of at most
``full_sort_chunk_size`` (history row, candidate) pairs, so peak memory is O(chunk x T x hidden),
independent of the catalogue size. Only the ID branch depends on the candidate itself: every SID
branch's query is a codebook embedding of the candidate (rule 2), and SIDs collide (the default
dataset's 3,000 tracks have 156 distinct joint SIDs), so each SID branch runs once per distinct query
SID and its result is gathered for the candidates that share it. The MLP's first layer splits the same
way, W [blocks] = sum_k W_k block_k: the SID branches' part is computed per (row, distinct query),
e_joint's per distinct query, e_id's and the bias per candidate; per pair remain the ID branch, one
gather-add per query codebook and the MLP layers after the first. Each branch pools its keys projected
by its W_k (sum_j a_j W_k e_j = W_k h), which is cheaper per pair than pooling then projecting, and
history positions past the longest history of a row chunk (padding, weight 0) are skipped. Its scores
equal ``predict`` on the same (row, item) pairs up to float rounding (eval mode).
``full_sort_bf16: true`` runs it under bfloat16 autocast (measured score difference to fp32 in
``benchmarks/README.md``). ``full_sort_predict_per_pair`` is the plain per-pair computation, kept as
the benchmark's reference.
"""
import torch
import torch.nn as nn
from torch.nn.init import constant_, xavier_normal_

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import FeatureSource, FeatureType, InputType

from recbole_psrq.errors import ConfigError
from recbole_psrq.model.layers import (ACTIVATIONS, ATTENTION_INPUTS, WEIGHT_ACTIVATIONS, ActivationUnit,
                                      length_mask)

VARIANTS = ("full", "wo_msc", "wo_mjc")
JOINT = "joint"


def sid_field(codebook):
    return f"{codebook}_sid"


def _setting(config, key, default):
    """``config[key]``, or ``default`` when the key is unset (RecBole's Config reads None)."""
    value = config[key]
    return default if value is None else value


def variant_codebooks(variant, modalities, joint_modalities):
    """The SID codebooks a variant keeps, in table-creation order (module docstring, "Variants")."""
    if variant == "wo_msc":
        return (JOINT,)
    if variant == "wo_mjc":
        return tuple(modalities)
    # the joint SID of one modality is that modality's SID: keep those codes once, as the joint codebook
    same_as_joint = set(joint_modalities) if len(joint_modalities) == 1 else set()
    return tuple(m for m in modalities if m not in same_as_joint) + (JOINT,)


class MCCA(SequentialRecommender):
    """Multi-Codebook Cross-Attention (module docstring). Config keys (``properties/model/MCCA.yaml``):
    ``embedding_size``, ``mcca_variant`` (full | wo_msc | wo_mjc), ``mcca_modalities`` (~ = declared),
    ``attention_hidden_size``, ``attention_input`` (concat | din), ``attention_activation``,
    ``attention_weight`` (none | sigmoid), ``mlp_hidden_size``, ``dropout_prob``,
    ``full_sort_chunk_size``, ``full_sort_bf16``."""

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
        # unset keys take the defaults; set ones are used as given (an empty list is an error, not a default)
        self.attention_hidden_size = list(_setting(config, "attention_hidden_size", [80, 40]))
        self.mlp_hidden_size = list(_setting(config, "mlp_hidden_size", [256, 128]))
        for key, example in (("attention_hidden_size", "[80, 40]"), ("mlp_hidden_size", "[256, 128]")):
            if not getattr(self, key):
                raise ConfigError(f"{key} needs at least one layer, e.g. {example}; got [].")
        self.dropout_prob = float(config["dropout_prob"] or 0.0)
        self.full_sort_chunk_size = _setting(config, "full_sort_chunk_size", 1024)
        if isinstance(self.full_sort_chunk_size, bool) or not isinstance(self.full_sort_chunk_size, int) \
                or self.full_sort_chunk_size < 1:
            raise ConfigError(f"full_sort_chunk_size (pairs scored at once in the full sort) must be an "
                              f"integer >= 1, got {self.full_sort_chunk_size!r}.")
        self.full_sort_bf16 = bool(config["full_sort_bf16"])
        attention_activation = str(config["attention_activation"] or "sigmoid").lower()
        if attention_activation not in ACTIVATIONS:
            raise ConfigError(f"Unknown attention_activation '{attention_activation}'; use one of "
                              f"{', '.join(ACTIVATIONS)}.")

        self.modalities = self._modalities(config)
        declared = list(config["sid_embedding_files"] or {})
        joint_modalities = list(config["sid_joint_modalities"] or declared)
        self.codebooks = variant_codebooks(self.variant, self.modalities, joint_modalities)
        if not self.codebooks:
            raise ConfigError(
                f"mcca_variant={self.variant} keeps the modal-specific codebooks only, and there are none: "
                f"mcca_modalities is empty (unset, it is every modality sid_embedding_files declares: "
                f"{declared}). List the modalities, e.g. `mcca_modalities: [text, audio]`, or use "
                "mcca_variant full or wo_msc.")
        self.branches = self.codebooks                                            # rule 1
        self.target_codebooks = (JOINT,) if JOINT in self.codebooks else ()      # rule 3
        # names of the MLP's input blocks, in concatenation order (h_*: pooled histories, e_*: target)
        self.mlp_inputs = tuple([f"h_{b}" for b in self.branches] + ["h_id", "e_id"] +
                                [f"e_{z}" for z in self.target_codebooks])
        sid_tokens = self._check_sid_fields(config, dataset)

        d = self.embedding_size
        # item id -> (L,) SID token ids per codebook; rebuilt from the dataset, not saved in checkpoints
        for z in self.codebooks:
            self.register_buffer(f"{z}_sid_tokens", sid_tokens[z].clone(), persistent=False)
        # full sort: the SID branches grouped by query codebook, that codebook's distinct SIDs and each
        # item's index into them (module docstring, "Full sort")
        self.query_groups = {}
        for branch in self.branches:
            self.query_groups.setdefault(self._query_codebook(branch), []).append(branch)
        for z in self.query_groups:
            distinct, query_of_item = torch.unique(sid_tokens[z], dim=0, return_inverse=True)
            self.register_buffer(f"{z}_query_tokens", distinct, persistent=False)
            self.register_buffer(f"{z}_query_of_item", query_of_item, persistent=False)
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
        self.predict_layer = nn.Linear(self.mlp_hidden_size[-1], 1)
        self.loss = nn.BCEWithLogitsLoss()

        self.apply(self._init_weights)

    # ------------------------------------------------------------------ setup
    def _modalities(self, config):
        """``mcca_modalities``, or every modality the dataset declares (``sid_embedding_files``)."""
        modalities = config["mcca_modalities"]
        if modalities is None:
            return tuple(config["sid_embedding_files"] or {})
        if isinstance(modalities, str) or len(set(modalities)) != len(modalities) or any(
                not isinstance(m, str) or m in (JOINT, "id") for m in modalities):
            raise ConfigError(
                f"mcca_modalities: {modalities!r} must be a list of distinct content modality names (the "
                f"'<name>_sid' fields of the modal-specific branches), e.g. [text, audio]; the joint "
                f"codebook is kept by mcca_variant, not listed. Unset, it is every declared modality.")
        return tuple(modalities)

    def _check_sid_fields(self, config, dataset):
        item_feat = dataset.get_item_feature()
        for z in self.codebooks:
            field = sid_field(z)
            ok = (field in dataset.field2type and dataset.field2source.get(field) == FeatureSource.ITEM
                  and dataset.field2type[field] in (FeatureType.TOKEN_SEQ, FeatureType.TOKEN)
                  and item_feat is not None and field in item_feat.interaction)
            if not ok:
                raise ConfigError(
                    f"MCCA (mcca_variant={self.variant}, codebooks {list(self.codebooks)}) needs the item "
                    f"feature field '{field}' (the {z} semantic ID: a token_seq of level-prefixed tokens "
                    f"such as 'l1_12 l2_5 l3_40'), but dataset '{config['dataset']}' has no such item "
                    f"field. Declare the modality's embedding file in `sid_embedding_files` (the SID hook "
                    f"then builds it: `sid_modalities: all` in MCCA.yaml, or list '{z}'), drop it from "
                    f"`mcca_modalities` (now {list(self.modalities)}; unset = every declared modality), or "
                    f"put a '{field}:token_seq' column into the .item file and list '{field}' under "
                    "load_col.item."
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

    def _query_codebook(self, branch):
        """The codebook whose target embedding is ``branch``'s query (rule 2)."""
        if branch == "id":
            return "id"
        return JOINT if JOINT in self.codebooks else branch

    def _logits(self, hist, mask, target, cross=False, return_weights=False):
        blocks, weights = {}, {}
        for branch in list(self.branches) + ["id"]:
            blocks[f"h_{branch}"], weights[branch] = self.attention[branch](
                hist[branch], target[self._query_codebook(branch)], mask, cross=cross)
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
        """Scores (B, n_items) of every item for every history row (module docstring, "Full sort"):
        the SID branches once per distinct query SID, broadcast to the candidates sharing it; equals
        ``predict`` on each (row, item) pair up to float rounding."""
        item_seq = interaction[self.ITEM_SEQ]
        with torch.autocast(item_seq.device.type, dtype=torch.bfloat16, enabled=self.full_sort_bf16):
            return self._full_sort_shared(item_seq, interaction[self.ITEM_SEQ_LEN])

    def _chunks(self):
        """(rows, candidates) per chunk: at most ``full_sort_chunk_size`` pairs."""
        budget = self.full_sort_chunk_size
        item_chunk = min(self.n_items, budget)
        return budget // item_chunk, item_chunk

    def _full_sort_shared(self, item_seq, item_seq_len):
        n_rows, device = item_seq.shape[0], item_seq.device
        row_chunk, item_chunk = self._chunks()
        first = self.mlp[1]  # mlp = [Dropout, Linear, ReLU, ...]; dropout is off in evaluation
        d = self.embedding_size
        # the first layer's weight split into one (H, d) block per MLP input: W x = sum_k W_k x_k
        w = {name: first.weight[:, k * d:(k + 1) * d] for k, name in enumerate(self.mlp_inputs)}
        item_embedding = self.item_embedding.weight
        # per candidate, shared by every row: the e_id part and the bias
        candidate_term = item_embedding @ w["e_id"].T + first.bias
        queries = {z: self.sid_embedding[z](getattr(self, f"{z}_query_tokens")).sum(dim=-2)
                   for z in self.query_groups}
        # per distinct query, shared by every row: the e_joint part (e_joint is the SID branches' query)
        query_terms = {z: queries[z] @ w[f"e_{z}"].T for z in self.target_codebooks}
        scores = torch.empty(n_rows, self.n_items, device=device)
        for r0 in range(0, n_rows, row_chunk):
            seq_len = item_seq_len[r0:r0 + row_chunk]
            # positions past the chunk's longest history are padding (weight 0) in every row: skip them
            seq = item_seq[r0:r0 + row_chunk, :max(1, int(seq_len.max()))]
            hist = self._history(seq)
            mask = length_mask(seq_len, seq.shape[1])
            shared = []  # (rows, distinct queries, H) first-layer parts of the SID branches, index per item
            for z, branches in self.query_groups.items():
                part = sum(self._pooled_projection(branch, hist, mask, queries[z], w, item_chunk)
                           for branch in branches)
                if z in query_terms:
                    part = part + query_terms[z]
                shared.append((part, getattr(self, f"{z}_query_of_item")))
            id_values = hist["id"] @ w["h_id"].T
            for c0 in range(0, self.n_items, item_chunk):
                c1 = c0 + item_chunk
                hidden, _ = self.attention["id"](hist["id"], item_embedding[c0:c1], mask, cross=True,
                                                 values=id_values)
                hidden = hidden + candidate_term[c0:c1]
                for part, inverse in shared:
                    hidden = hidden + part[:, inverse[c0:c1]]
                scores[r0:r0 + row_chunk, c0:c1] = torch.sigmoid(self._after_first_layer(hidden))
        return scores

    def _pooled_projection(self, branch, hist, mask, query, w, chunk):
        """W_h_branch h_branch for every (row, query): (rows, Q, H), the queries in chunks."""
        values = hist[branch] @ w[f"h_{branch}"].T
        return torch.cat([self.attention[branch](hist[branch], query[q0:q0 + chunk], mask, cross=True,
                                                 values=values)[0]
                          for q0 in range(0, query.shape[0], chunk)], dim=1)

    def _after_first_layer(self, hidden):
        """The MLP after its first linear layer, and the output layer: (..., H) -> logits (...)."""
        return self.predict_layer(self.mlp[2:](hidden)).squeeze(-1)

    def full_sort_predict_per_pair(self, interaction):
        """``full_sort_predict`` without sharing: every branch and the whole MLP per (row, item) pair
        (the reference ``benchmarks/bench_train.py`` measures the speed-up against)."""
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        n_rows = item_seq.shape[0]
        row_chunk, item_chunk = self._chunks()
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
