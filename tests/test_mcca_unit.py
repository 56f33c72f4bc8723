"""MCCA (recbole_psrq/model/mcca.py) on a dataset stub, against computations written out here from the
model's parameters: fast enough to rerun for every mutant of mcca.py (TESTING.md, mutation testing).
``tests/test_mcca.py`` checks the same model on RecBole-built datasets (slower: its fixtures build them).

The stub provides what ``SequentialRecommender.__init__`` and ``MCCA.__init__`` read: the config keys
(unset keys read ``None``, as RecBole's ``Config``) and the dataset's ``num``, ``field2type``,
``field2source`` and item feature table with the ``<codebook>_sid`` token_seq fields."""
import re

import pytest
import torch
import torch.nn as nn
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

from recbole_psrq.errors import ConfigError
from recbole_psrq.model.layers import ActivationUnit
from recbole_psrq.model.mcca import JOINT, MCCA, VARIANTS, sid_field, variant_codebooks

N_ITEMS = 8  # item ids 0..7, 0 = padding
# level-prefixed SID tokens remapped to ids (level 1, 2, 3 vocabularies disjoint); item 0 is padding.
# Distinct rows (item 0's included): text 5, audio 6, joint 4, so each codebook's query count differs.
SIDS = {
    "text": [[0, 0, 0], [1, 4, 7], [1, 4, 7], [2, 5, 8], [2, 5, 8], [3, 6, 9], [1, 5, 9], [3, 6, 9]],
    "audio": [[0, 0, 0], [1, 3, 5], [2, 4, 6], [1, 3, 5], [2, 4, 7], [1, 4, 6], [1, 3, 5], [2, 3, 7]],
    "joint": [[0, 0, 0], [1, 4, 7], [1, 4, 7], [2, 5, 9], [2, 5, 9], [3, 6, 10], [1, 4, 7], [3, 6, 10]],
}
DISTINCT = {"text": 5, "audio": 6, "joint": 4}
VOCAB = {"text": 12, "audio": 9, "joint": 11, "lyrics": 5}  # dataset.num(<z>_sid): larger than the max id + 1
DECLARED = {"text": "stub.text.npz", "audio": "stub.audio.npz"}


class Config(dict):
    """RecBole's ``Config[key]`` is ``None`` for an unset key."""

    def __missing__(self, key):
        return None


class StubDataset:
    """What MCCA reads from a RecBole dataset."""

    def __init__(self, sids=None, types=None, sources=None, item_columns=None):
        sids = {z: torch.tensor(t) for z, t in (SIDS if sids is None else sids).items()}
        self.field2type = {"item_id": FeatureType.TOKEN, "user_id": FeatureType.TOKEN}
        self.field2source = {"item_id": FeatureSource.ITEM_ID, "user_id": FeatureSource.USER_ID}
        for z, table in sids.items():
            self.field2type[sid_field(z)] = FeatureType.TOKEN_SEQ if table.dim() == 2 else FeatureType.TOKEN
            self.field2source[sid_field(z)] = FeatureSource.ITEM
        self.field2type.update(types or {})
        self.field2source.update(sources or {})
        columns = {sid_field(z): t for z, t in sids.items()} if item_columns is None else item_columns
        self.item_feat = Interaction({"item_id": torch.arange(N_ITEMS), **columns})

    def num(self, field):
        if field == "item_id":
            return N_ITEMS
        if field == "user_id":
            return 3
        if field.endswith("_sid") and field in self.field2type:
            return VOCAB[field[:-4]]
        raise ValueError(f"Field [{field}] not defined in dataset.")

    def get_item_feature(self):
        return self.item_feat


BASE = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_", "MAX_ITEM_LIST_LENGTH": 5,
        "device": torch.device("cpu"), "LABEL_FIELD": "click", "dataset": "stubset",
        "sid_embedding_files": DECLARED}
SMALL = {"embedding_size": 4, "attention_hidden_size": [3, 2], "mlp_hidden_size": [5, 3]}


def config(**changes):
    return Config({**BASE, **changes})


def make(dataset=None, randomize=True, **changes):
    """MCCA on the stub (small sizes unless overridden), in eval mode; with ``randomize`` every parameter
    (biases and padding rows included) is redrawn, so a dropped or misplaced term shows in the output."""
    torch.manual_seed(0)
    model = MCCA(config(**{**SMALL, **changes}), dataset or StubDataset())
    if randomize:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)
    return model.eval()


# ----------------------------------------------------------------- the model written out
ACT = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


def sid_ref(model, z, items):
    """e^z = sum over levels of the codebook table at the item's SID tokens (tokens from the test's table)."""
    return model.sid_embedding[z].weight[torch.tensor(SIDS[z])[items]].sum(-2)


def attend_ref(unit, keys, query, mask, din, activation, sigmoid_weight):
    """DIN unit from its parameters: weight_t = MLP([e_t, q] or [e_t, q, e_t - q, e_t * q] decomposed), 0 at
    padding; pooled = sum_t weight_t e_t. Returns (pooled (B, d), weights (B, T))."""
    p = dict(unit.named_parameters())
    hidden = keys @ p["key_proj.weight"].T + p["key_proj.bias"] + (query @ p["query_proj.weight"].T).unsqueeze(1)
    if din:
        hidden = hidden + (keys * query.unsqueeze(1)) @ p["product_proj.weight"].T
    else:
        assert "product_proj.weight" not in p
    linears = sorted({int(n.split(".")[1]) for n in p if n.startswith("mlp.")})
    hidden = ACT[activation](hidden)
    for k, index in enumerate(linears):
        hidden = hidden @ p[f"mlp.{index}.weight"].T + p[f"mlp.{index}.bias"]
        if k < len(linears) - 1:
            hidden = ACT[activation](hidden)
    weights = hidden.squeeze(-1)
    if sigmoid_weight:
        weights = torch.sigmoid(weights)
    weights = torch.where(mask, weights, torch.zeros_like(weights))
    return (weights.unsqueeze(-1) * keys).sum(1), weights


def logits_ref(model, seq, seq_len, target, codebooks, din=False, activation="sigmoid", sigmoid_weight=False):
    """MCCA's logits by the module docstring's rules, for the kept ``codebooks`` (written per test):
    branch z's query is e^joint(target) when joint is kept, else e^z(target); the ID branch's query is
    e_id(target); MLP input [h_z for z in codebooks, h_id, e_id(t), e_joint(t) if joint kept]; ReLU MLP
    (dropout off), then the output layer. Returns (logits (B,), weights per branch)."""
    mask = torch.arange(seq.shape[1]).unsqueeze(0) < seq_len.unsqueeze(1)
    blocks, weights = [], {}
    for z in codebooks:
        query = sid_ref(model, "joint" if "joint" in codebooks else z, target)
        pooled, weights[z] = attend_ref(model.attention[z], sid_ref(model, z, seq), query, mask, din,
                                        activation, sigmoid_weight)
        blocks.append(pooled)
    item = model.item_embedding.weight
    pooled, weights["id"] = attend_ref(model.attention["id"], item[seq], item[target], mask, din, activation,
                                       sigmoid_weight)
    blocks += [pooled, item[target]] + ([sid_ref(model, "joint", target)] if "joint" in codebooks else [])
    x = torch.cat(blocks, dim=-1)
    linears = [layer for layer in model.mlp if isinstance(layer, nn.Linear)]
    for layer in linears:
        x = torch.relu(x @ layer.weight.T + layer.bias)
    return (x @ model.predict_layer.weight.T + model.predict_layer.bias).squeeze(-1), weights


# 5 rows, history width 6; the longest history (4) is shorter than the width; row 1 has none. Padding
# positions hold real item ids: only the lengths say what is history.
SEQ = torch.tensor([[3, 5, 1, 7, 2, 2], [6, 4, 4, 1, 1, 3], [1, 2, 3, 4, 5, 6], [7, 1, 1, 5, 5, 5],
                    [2, 6, 3, 3, 7, 7]])
SEQ_LEN = torch.tensor([3, 0, 4, 1, 2])
TARGET = torch.tensor([2, 7, 5, 1, 4])
LABEL = torch.tensor([1, 0, 0, 1, 1])  # integers: the model casts the label to float itself
CODEBOOKS = {"full": ("text", "audio", "joint"), "wo_msc": ("joint",), "wo_mjc": ("text", "audio")}


def pairs_ref(model, codebooks, **kwargs):
    """sigmoid(logits) of every (row, item) pair, items 0..n-1: (5, N_ITEMS)."""
    rows = torch.arange(5).repeat_interleave(N_ITEMS)
    items = torch.arange(N_ITEMS).repeat(5)
    logits, _ = logits_ref(model, SEQ[rows], SEQ_LEN[rows], items, codebooks, **kwargs)
    return torch.sigmoid(logits).view(5, N_ITEMS)


# ----------------------------------------------------------------- names and the variant policy
def test_sid_field_and_variant_codebooks():
    assert sid_field("text") == "text_sid" and sid_field(JOINT) == "joint_sid"
    assert VARIANTS == ("full", "wo_msc", "wo_mjc") and JOINT == "joint"
    both = ["text", "audio"]
    assert variant_codebooks("full", both, both) == ("text", "audio", "joint")
    assert variant_codebooks("full", ["audio", "text"], both) == ("audio", "text", "joint")
    assert variant_codebooks("wo_msc", both, both) == ("joint",)
    assert variant_codebooks("wo_mjc", both, both) == ("text", "audio")
    assert variant_codebooks("wo_mjc", [], both) == ()
    # one joint modality: its modal-specific codebook is the joint one, kept once (as the joint codebook)
    assert variant_codebooks("full", ["text"], ["text"]) == ("joint",)
    assert variant_codebooks("full", both, ["text"]) == ("audio", "joint")
    assert variant_codebooks("full", both, ["lyrics"]) == ("text", "audio", "joint")
    assert variant_codebooks("wo_mjc", ["text"], ["text"]) == ("text",)
    assert variant_codebooks("wo_msc", ["text"], ["text"]) == ("joint",)


@pytest.mark.parametrize("variant, changes, codebooks, mlp_inputs", [
    ("full", {}, ("text", "audio", "joint"), ("h_text", "h_audio", "h_joint", "h_id", "e_id", "e_joint")),
    ("wo_msc", {}, ("joint",), ("h_joint", "h_id", "e_id", "e_joint")),
    ("wo_mjc", {}, ("text", "audio"), ("h_text", "h_audio", "h_id", "e_id")),
    # mcca_modalities' order, not the declaration order
    ("full", {"mcca_modalities": ["audio", "text"]}, ("audio", "text", "joint"),
     ("h_audio", "h_text", "h_joint", "h_id", "e_id", "e_joint")),
    # one joint modality (sid_joint_modalities): its codes are kept once, as the joint codebook
    ("full", {"sid_joint_modalities": ["text"]}, ("audio", "joint"), ("h_audio", "h_joint", "h_id", "e_id", "e_joint")),
    # one declared modality: the joint SID is over it alone (sid_joint_modalities unset = every declared one)
    ("full", {"sid_embedding_files": {"text": "t.npz"}}, ("joint",), ("h_joint", "h_id", "e_id", "e_joint")),
    ("wo_mjc", {"sid_embedding_files": {"text": "t.npz"}}, ("text",), ("h_text", "h_id", "e_id")),
    # nothing declared, nothing listed: the joint codebook alone
    ("full", {"sid_embedding_files": None}, ("joint",), ("h_joint", "h_id", "e_id", "e_joint")),
])
def test_codebooks_tables_units_and_mlp_blocks_of_each_variant(variant, changes, codebooks, mlp_inputs):
    model = make(mcca_variant=variant, randomize=False, **changes)
    assert model.variant == variant and model.codebooks == codebooks and model.branches == codebooks
    assert model.mlp_inputs == mlp_inputs
    assert list(model.sid_embedding) == list(codebooks)
    assert list(model.attention) == [*codebooks, "id"]
    for z in codebooks:  # one table per codebook, over the field's whole (level-prefixed) vocabulary
        assert model.sid_embedding[z].weight.shape == (VOCAB[z], 4) and model.sid_embedding[z].padding_idx == 0
    assert model.item_embedding.weight.shape == (N_ITEMS, 4) and model.item_embedding.padding_idx == 0
    assert model.mlp[1].in_features == 4 * len(mlp_inputs)


def test_parameters_are_created_in_the_papers_order_and_sid_tables_are_not_saved():
    model = make(randomize=False)
    names = [n for n, _ in model.named_parameters()]
    assert names[:4] == ["item_embedding.weight", "sid_embedding.text.weight", "sid_embedding.audio.weight",
                         "sid_embedding.joint.weight"]
    units = [n.split(".")[1] for n in names if n.startswith("attention.")]
    assert list(dict.fromkeys(units)) == ["text", "audio", "joint", "id"]
    assert names[-2:] == ["predict_layer.weight", "predict_layer.bias"]
    assert names.index("mlp.1.weight") > names.index("attention.id.mlp.3.weight")
    # the item -> SID tables and the full sort's query tables are rebuilt from the dataset, never saved
    state = model.state_dict()
    assert not any("tokens" in k or "query_of_item" in k for k in state)
    assert set(state) == set(names)
    for z in ("text", "audio", "joint"):
        assert torch.equal(getattr(model, f"{z}_sid_tokens"), torch.tensor(SIDS[z]))


def test_layers_follow_the_config():
    model = make(randomize=False, dropout_prob=0.3, attention_input="din", attention_weight="sigmoid",
                 attention_activation="TanH", full_sort_chunk_size=7, full_sort_bf16=1, embedding_size=6,
                 mlp_hidden_size=[5, 4, 3])
    assert model.embedding_size == 6 and model.dropout_prob == 0.3 and model.full_sort_chunk_size == 7
    assert model.full_sort_bf16 is True and model.LABEL_FIELD == "click" and model.n_items == N_ITEMS
    assert [type(layer) for layer in model.mlp] == [nn.Dropout, nn.Linear, nn.ReLU] * 3
    assert [layer.p for layer in model.mlp if isinstance(layer, nn.Dropout)] == [0.3, 0.3, 0.3]
    assert [(layer.in_features, layer.out_features) for layer in model.mlp if isinstance(layer, nn.Linear)] == \
        [(36, 5), (5, 4), (4, 3)]
    assert (model.predict_layer.in_features, model.predict_layer.out_features) == (3, 1)
    for unit in model.attention.values():
        assert unit.attention_input == "din" and unit.weight_activation == "sigmoid"
        assert unit.key_proj.weight.shape == (3, 6) and unit.product_proj.weight.shape == (3, 6)
        assert [type(layer) for layer in unit.mlp] == [nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
        assert [layer.weight.shape for layer in unit.mlp if isinstance(layer, nn.Linear)] == [(2, 3), (1, 2)]
    assert isinstance(model.loss, nn.BCEWithLogitsLoss)


def test_unset_options_take_the_documented_defaults():
    model = make(randomize=False, embedding_size=None, attention_hidden_size=None, mlp_hidden_size=None)
    assert (model.embedding_size, model.variant, model.attention_input) == (64, "full", "concat")
    assert model.attention_hidden_size == [80, 40] and model.mlp_hidden_size == [256, 128]
    assert (model.dropout_prob, model.full_sort_chunk_size, model.full_sort_bf16) == (0.0, 1024, False)
    assert model.modalities == ("text", "audio") and model.codebooks == ("text", "audio", "joint")
    assert [(layer.in_features, layer.out_features) for layer in model.mlp if isinstance(layer, nn.Linear)] == \
        [(6 * 64, 256), (256, 128)]
    assert [layer.p for layer in model.mlp if isinstance(layer, nn.Dropout)] == [0.0, 0.0]
    assert model.predict_layer.in_features == 128
    for unit in model.attention.values():
        assert unit.attention_input == "concat" and unit.weight_activation == "none"
        assert unit.product_proj is None and unit.key_proj.weight.shape == (80, 64)
        assert [type(layer) for layer in unit.mlp] == [nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear]
    assert MCCA.input_type.name == "POINTWISE" and MCCA.protocol == "ctr"


# ----------------------------------------------------------------- forward, predict, loss
@pytest.mark.parametrize("variant, din, activation, sigmoid_weight", [
    ("full", False, "sigmoid", False), ("full", True, "relu", True), ("wo_msc", True, "tanh", False),
    ("wo_mjc", False, "relu", False), ("wo_mjc", True, "sigmoid", True),
])
def test_forward_predict_and_loss_equal_the_written_out_model(variant, din, activation, sigmoid_weight):
    model = make(mcca_variant=variant, attention_input="din" if din else "concat", attention_activation=activation,
                 attention_weight="sigmoid" if sigmoid_weight else "none")
    kwargs = dict(din=din, activation=activation, sigmoid_weight=sigmoid_weight)
    want, want_weights = logits_ref(model, SEQ, SEQ_LEN, TARGET, CODEBOOKS[variant], **kwargs)
    with torch.no_grad():
        logits = model(SEQ, SEQ_LEN, TARGET)
        again, weights = model(SEQ, SEQ_LEN, TARGET, return_weights=True)
        batch = Interaction({"item_id_list": SEQ, "item_length": SEQ_LEN, "item_id": TARGET, "click": LABEL})
        predicted = model.predict(batch)
        loss = model.calculate_loss(batch)
    assert logits.shape == (5,) and torch.allclose(logits, want, atol=1e-5), (logits, want)
    assert torch.equal(again, logits)
    assert set(weights) == set(want_weights)
    for branch, w in weights.items():
        assert w.shape == (5, 6) and torch.allclose(w, want_weights[branch], atol=1e-5), branch
        padding = torch.arange(6).unsqueeze(0) >= SEQ_LEN.unsqueeze(1)
        assert (w[padding] == 0).all() and (w[~padding] != 0).all()
    assert torch.allclose(predicted, torch.sigmoid(want), atol=1e-6)
    p, y = torch.sigmoid(want), LABEL.float()
    assert loss.shape == () and torch.allclose(loss, -(y * p.log() + (1 - y) * (1 - p).log()).mean(), atol=1e-5)
    assert 0.01 < p.min() and p.max() < 0.99 and p.max() - p.min() > 0.01  # not saturated, not constant


def test_one_level_token_sid_fields_and_levels_summed():
    """A ``token`` SID field (one level per item) is a one-column table; e^z sums the levels' rows."""
    sids = {"text": [r[0] for r in SIDS["text"]], "audio": SIDS["audio"], "joint": [r[1] for r in SIDS["joint"]]}
    model = make(StubDataset(sids=sids))
    assert model.text_sid_tokens.shape == (N_ITEMS, 1) and model.audio_sid_tokens.shape == (N_ITEMS, 3)
    items = torch.tensor([[1, 5], [7, 0]])
    with torch.no_grad():
        text = model.sid_embed("text", items)
        audio = model.sid_embed("audio", items)
    table = model.sid_embedding["audio"].weight
    tokens = torch.tensor(SIDS["audio"])[items]
    assert audio.shape == (2, 2, 4) and torch.allclose(audio, table[tokens[..., 0]] + table[tokens[..., 1]] +
                                                       table[tokens[..., 2]])
    assert torch.equal(text, model.sid_embedding["text"].weight[torch.tensor(sids["text"])[items]])


def test_the_models_sid_tables_do_not_alias_the_datasets():
    dataset = StubDataset()
    model = make(dataset)
    with torch.no_grad():
        before = model(SEQ, SEQ_LEN, TARGET)
        for z in ("text", "audio", "joint"):
            dataset.item_feat[sid_field(z)].zero_()
        assert torch.equal(model(SEQ, SEQ_LEN, TARGET), before)


def test_training_mode_applies_dropout_in_the_mlp():
    model = make(dropout_prob=0.5).train()
    torch.manual_seed(3)
    first = model(SEQ, SEQ_LEN, TARGET)
    second = model(SEQ, SEQ_LEN, TARGET)
    assert not torch.equal(first, second)
    model.eval()
    assert torch.allclose(model(SEQ, SEQ_LEN, TARGET), logits_ref(model, SEQ, SEQ_LEN, TARGET, CODEBOOKS["full"])[0],
                          atol=1e-5)


# ----------------------------------------------------------------- full sort
FULL_SORT_CASES = [  # variant, attention_input, weight, activation, full_sort_chunk_size
    ("full", "concat", "none", "sigmoid", 1024), ("full", "din", "sigmoid", "relu", 3),
    ("wo_msc", "concat", "none", "tanh", 5), ("wo_mjc", "din", "none", "sigmoid", 8),
    ("wo_mjc", "concat", "sigmoid", "relu", 14), ("full", "concat", "none", "relu", 1),
]


@pytest.mark.parametrize("variant, attention_input, weight, activation, chunk", FULL_SORT_CASES)
@pytest.mark.parametrize("method", ["full_sort_predict", "full_sort_predict_per_pair"])
def test_full_sort_scores_every_row_item_pair_as_the_written_out_model(method, variant, attention_input, weight,
                                                                       activation, chunk):
    """Every item, item 0 (padding) included, gets the score the model gives that (row, item) pair."""
    model = make(mcca_variant=variant, attention_input=attention_input, attention_weight=weight,
                 attention_activation=activation, full_sort_chunk_size=chunk)
    want = pairs_ref(model, CODEBOOKS[variant], din=attention_input == "din", activation=activation,
                     sigmoid_weight=weight == "sigmoid")
    with torch.no_grad():
        scores = getattr(model, method)(Interaction({"item_id_list": SEQ, "item_length": SEQ_LEN}))
    assert scores.shape == (5, N_ITEMS) and scores.dtype == torch.float32
    assert torch.allclose(scores, want, rtol=0, atol=2e-6), (scores - want).abs().max()


def _spy_units(model, monkeypatch):
    """(branch, rows, queries, history width) of every activation-unit call."""
    calls = []
    original = ActivationUnit.forward

    def spy(unit, keys, query, mask, cross=False, values=None):
        branch = next(k for k, u in model.attention.items() if u is unit)
        calls.append((branch, keys.shape[0], query.shape[0], keys.shape[1]))
        return original(unit, keys, query, mask, cross, values)

    monkeypatch.setattr(ActivationUnit, "forward", spy)
    return calls


@pytest.mark.parametrize("chunk, rows, items", [
    (1, 1, 1), (3, 1, 3), (8, 1, 8), (15, 1, 8), (16, 2, 8), (40, 5, 8), (1024, 5, 8),
])
@pytest.mark.parametrize("method", ["full_sort_predict", "full_sort_predict_per_pair"])
def test_full_sort_chunks_hold_at_most_the_chunk_size_pairs(method, chunk, rows, items, monkeypatch):
    """Chunks take as many candidates as fit (up to the catalogue), then as many rows as fit (a size below 1
    is a ConfigError). Every (row, candidate) pair is in exactly one chunk."""
    model = make(mcca_variant="wo_mjc", full_sort_chunk_size=chunk)
    calls = _spy_units(model, monkeypatch)
    with torch.no_grad():
        getattr(model, method)(Interaction({"item_id_list": SEQ, "item_length": SEQ_LEN}))
    id_calls = [(b, q) for _, b, q, _ in [c for c in calls if c[0] == "id"]]
    row_chunks = [min(rows, 5 - r0) for r0 in range(0, 5, rows)]
    item_chunks = [min(items, N_ITEMS - c0) for c0 in range(0, N_ITEMS, items)]
    assert id_calls == [(b, q) for b in row_chunks for q in item_chunks]
    if method == "full_sort_predict_per_pair":  # every branch per (row, candidate) chunk
        for z in ("text", "audio"):
            assert [(b, q) for branch, b, q, _ in calls if branch == z] == id_calls
        return
    # the shared full sort's SID branches take their distinct queries in chunks of the same size
    for z in ("text", "audio"):
        query_chunks = [min(items, DISTINCT[z] - q0) for q0 in range(0, DISTINCT[z], items)]
        assert [(b, q) for branch, b, q, _ in calls if branch == z] == \
            [(b, q) for b in row_chunks for q in query_chunks], z


@pytest.mark.parametrize("variant, queries", [
    ("full", {"text": "joint", "audio": "joint", "joint": "joint"}),
    ("wo_mjc", {"text": "text", "audio": "audio"}),
    ("wo_msc", {"joint": "joint"}),
])
def test_full_sort_runs_each_sid_branch_once_per_distinct_query_sid(variant, queries, monkeypatch):
    model = make(mcca_variant=variant)
    calls = _spy_units(model, monkeypatch)
    with torch.no_grad():
        model.full_sort_predict(Interaction({"item_id_list": SEQ, "item_length": SEQ_LEN}))
    counts = {}
    for branch, rows, n_queries, width in calls:
        assert rows == 5 and width == 4  # one row chunk; history cut to the longest history (4 of 6)
        counts[branch] = counts.get(branch, 0) + n_queries
    assert counts == {**{b: DISTINCT[q] for b, q in queries.items()}, "id": N_ITEMS}


def test_full_sort_of_rows_without_history(monkeypatch):
    """A chunk whose rows have no history still scores: the ID and SID branches pool nothing."""
    model = make(full_sort_chunk_size=N_ITEMS)  # one row per chunk
    calls = _spy_units(model, monkeypatch)
    rows = Interaction({"item_id_list": SEQ[[1, 1]], "item_length": SEQ_LEN[[1, 1]]})
    with torch.no_grad():
        scores = model.full_sort_predict(rows)
    assert {width for *_, width in calls} == {1}
    assert torch.allclose(scores, pairs_ref(model, CODEBOOKS["full"])[[1, 1]], rtol=0, atol=2e-6)


def test_bf16_full_sort_runs_the_layers_in_bfloat16_and_stays_close(monkeypatch):
    model = make()
    dtypes = []
    model.predict_layer.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    rows = Interaction({"item_id_list": SEQ, "item_length": SEQ_LEN})
    with torch.no_grad():
        fp32 = model.full_sort_predict(rows)
        assert set(dtypes) == {torch.float32}
        dtypes.clear()
        model.full_sort_bf16 = True
        bf16 = model.full_sort_predict(rows)
    assert set(dtypes) == {torch.bfloat16}
    difference = (bf16 - fp32).abs().max()
    assert bf16.dtype == torch.float32 and 0 < difference < 3e-2, difference
    # bfloat16 whatever autocast's default for the device is (float16 on CUDA; set so here on the CPU)
    default = torch.get_autocast_dtype("cpu")
    torch.set_autocast_dtype("cpu", torch.float16)
    try:
        dtypes.clear()
        with torch.no_grad():
            assert torch.equal(model.full_sort_predict(rows), bf16)
        assert set(dtypes) == {torch.bfloat16}
    finally:
        torch.set_autocast_dtype("cpu", default)


@pytest.mark.parametrize("method", ["full_sort_predict", "full_sort_predict_per_pair"])
def test_full_sort_works_on_the_inputs_device_not_the_default_device(method):
    """Scores and candidate ids are made on the history's device (on a GPU run the default device is the CPU;
    here the default is "meta" and the inputs are on the CPU)."""
    model = make()
    rows = Interaction({"item_id_list": SEQ, "item_length": SEQ_LEN})
    with torch.no_grad(), torch.device("meta"):
        scores = getattr(model, method)(rows)
    assert scores.device.type == "cpu"
    assert torch.allclose(scores, pairs_ref(model, CODEBOOKS["full"]), rtol=0, atol=2e-6)


# ----------------------------------------------------------------- configuration errors
VARIANT_HELP = ("full = PSRQ+MCCA, wo_msc = w/o modal-specific codebooks, wo_mjc = w/o modal-joint codebook")


@pytest.mark.parametrize("changes, message", [
    ({"mcca_variant": "nope"}, f"Unknown mcca_variant 'nope'; use one of full, wo_msc, wo_mjc ({VARIANT_HELP})."),
    ({"attention_input": "sum"}, "Unknown attention_input 'sum'; use one of concat, din."),
    ({"attention_weight": "softmax"},
     "Unknown attention_weight 'softmax'; use one of none, sigmoid (the paper uses no softmax)."),
    ({"attention_activation": "Swish"},
     "Unknown attention_activation 'swish'; use one of sigmoid, relu, tanh, leakyrelu, prelu, none."),
    ({"mcca_variant": "wo_mjc", "mcca_modalities": []},
     "mcca_variant=wo_mjc keeps the modal-specific codebooks only, and there are none: mcca_modalities is empty "
     "(unset, it is every modality sid_embedding_files declares: ['text', 'audio']). List the modalities, e.g. "
     "`mcca_modalities: [text, audio]`, or use mcca_variant full or wo_msc."),
    ({"mcca_variant": "wo_mjc", "sid_embedding_files": None},
     "mcca_variant=wo_mjc keeps the modal-specific codebooks only, and there are none: mcca_modalities is empty "
     "(unset, it is every modality sid_embedding_files declares: []). List the modalities, e.g. "
     "`mcca_modalities: [text, audio]`, or use mcca_variant full or wo_msc."),
    ({"mlp_hidden_size": []}, "mlp_hidden_size needs at least one layer, e.g. [256, 128]; got []."),
    ({"attention_hidden_size": []}, "attention_hidden_size needs at least one layer, e.g. [80, 40]; got []."),
    *[({"full_sort_chunk_size": size}, "full_sort_chunk_size (pairs scored at once in the full sort) must be an "
                                       f"integer >= 1, got {size!r}.") for size in (0, -3, 2.5, True, "64")],
])
def test_bad_options_are_config_errors_with_the_exact_message(changes, message):
    with pytest.raises(ConfigError) as error:
        make(randomize=False, **changes)
    assert str(error.value) == message


MODALITIES_MESSAGE = ("mcca_modalities: {!r} must be a list of distinct content modality names (the '<name>_sid' "
                      "fields of the modal-specific branches), e.g. [text, audio]; the joint codebook is kept by "
                      "mcca_variant, not listed. Unset, it is every declared modality.")


@pytest.mark.parametrize("modalities", ["text", ["text", "text"], ["text", 1], ["joint"], ["audio", "id"], ("id",)])
def test_bad_mcca_modalities_are_config_errors(modalities):
    with pytest.raises(ConfigError) as error:
        make(randomize=False, mcca_modalities=modalities)
    assert str(error.value) == MODALITIES_MESSAGE.format(modalities)


def test_good_mcca_modalities():
    assert make(randomize=False, mcca_modalities=("audio",)).modalities == ("audio",)
    assert make(randomize=False, mcca_modalities=[]).codebooks == ("joint",)
    assert make(randomize=False, sid_embedding_files={"audio": "a", "text": "t"}).modalities == ("audio", "text")


def _field_message(field, z, variant="full", codebooks=("text", "audio", "joint"), modalities=("text", "audio")):
    return (f"MCCA (mcca_variant={variant}, codebooks {list(codebooks)}) needs the item feature field '{field}' (the "
            f"{z} semantic ID: a token_seq of level-prefixed tokens such as 'l1_12 l2_5 l3_40'), but dataset "
            f"'stubset' has no such item field. Declare the modality's embedding file in `sid_embedding_files` "
            f"(the SID hook then builds it: `sid_modalities: all` in MCCA.yaml, or list '{z}'), drop it from "
            f"`mcca_modalities` (now {list(modalities)}; unset = every declared modality), or put a "
            f"'{field}:token_seq' column into the .item file and list '{field}' under load_col.item.")


def _without(z):
    return StubDataset(sids={k: v for k, v in SIDS.items() if k != z})


@pytest.mark.parametrize("dataset, field", [
    (lambda: _without("audio"), "audio_sid"),                                          # no such field
    (lambda: StubDataset(sources={"audio_sid": FeatureSource.USER}), "audio_sid"),     # a user feature
    (lambda: StubDataset(types={"text_sid": FeatureType.FLOAT_SEQ}), "text_sid"),      # not tokens
    (lambda: StubDataset(item_columns={"text_sid": torch.tensor(SIDS["text"]),         # declared, not loaded
                                       "audio_sid": torch.tensor(SIDS["audio"])}), "joint_sid"),
])
def test_a_missing_or_unusable_sid_field_is_a_config_error(dataset, field):
    with pytest.raises(ConfigError) as error:
        make(dataset(), randomize=False)
    assert str(error.value) == _field_message(field, field[:-4])


def test_missing_field_message_names_the_variant_codebooks_and_modalities():
    with pytest.raises(ConfigError) as error:
        make(_without("text"), randomize=False, mcca_variant="wo_mjc", mcca_modalities=["audio", "text"])
    assert str(error.value) == _field_message("text_sid", "text", "wo_mjc", ("audio", "text"), ("audio", "text"))
    make(_without("text"), randomize=False, mcca_variant="wo_msc")  # needs joint_sid only
    with pytest.raises(ConfigError, match=re.escape("field 'lyrics_sid'")):
        make(randomize=False, mcca_modalities=["lyrics"])


# ----------------------------------------------------------------- initialisation
def test_init_weights_by_module_type():
    model = make(randomize=False)

    def xavier(shape, seed):
        torch.manual_seed(seed)
        return nn.init.xavier_normal_(torch.empty(shape))

    embedding = nn.Embedding(6, 5, padding_idx=2)
    torch.manual_seed(4)
    model._init_weights(embedding)
    want = xavier((6, 5), 4)
    want[2] = 0
    assert torch.equal(embedding.weight.data, want)
    plain = nn.Embedding(6, 5)
    torch.manual_seed(5)
    model._init_weights(plain)
    assert torch.equal(plain.weight.data, xavier((6, 5), 5))
    linear = nn.Linear(7, 3)
    nn.init.constant_(linear.bias, 1.5)
    torch.manual_seed(6)
    model._init_weights(linear)
    assert torch.equal(linear.weight.data, xavier((3, 7), 6)) and torch.equal(linear.bias.data, torch.zeros(3))
    no_bias = nn.Linear(7, 3, bias=False)
    torch.manual_seed(7)
    model._init_weights(no_bias)
    assert torch.equal(no_bias.weight.data, xavier((3, 7), 7))
    prelu = nn.PReLU()
    model._init_weights(prelu)  # other modules keep their own initialisation
    assert prelu.weight.item() == 0.25


def test_the_model_is_initialised_by_init_weights():
    model = make(randomize=False, attention_activation="prelu")
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            assert (module.weight[0] == 0).all() and (module.weight[1:] != 0).all(), name
        if isinstance(module, nn.Linear) and module.bias is not None:
            assert (module.bias == 0).all(), name
        if isinstance(module, nn.PReLU):
            assert module.weight.item() == 0.25, name
    # xavier normal, std sqrt(2 / (fan_in + fan_out)), not PyTorch's default (uniform within 1/sqrt(fan_in))
    big = make(randomize=False, embedding_size=None, attention_hidden_size=None, mlp_hidden_size=None)
    first = big.mlp[1].weight
    assert abs(first.std().item() - (2 / (384 + 256)) ** 0.5) < 0.004
    assert first.abs().max() > 1 / 384 ** 0.5
