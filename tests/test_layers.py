"""MCCA's building blocks (recbole_psrq/model/layers.py) on small tensors, against computations written out
here: fast enough to rerun for every mutant of layers.py (see TESTING.md, mutation testing)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_psrq.model.layers import (ACTIVATIONS, ATTENTION_INPUTS, WEIGHT_ACTIVATIONS, ActivationUnit,
                                       activation_layer, length_mask)

CLASSES = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "leakyrelu": nn.LeakyReLU,
           "prelu": nn.PReLU, "none": nn.Identity}
FUNCTIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh,
             "leakyrelu": lambda x: F.leaky_relu(x, 0.01), "prelu": lambda x: torch.where(x > 0, x, 0.25 * x),
             "none": lambda x: x}


def test_names_and_activation_layers():
    assert ACTIVATIONS == tuple(CLASSES)
    assert ATTENTION_INPUTS == ("concat", "din") and WEIGHT_ACTIVATIONS == ("none", "sigmoid")
    for name, cls in CLASSES.items():
        assert type(activation_layer(name)) is cls
        assert type(activation_layer(name.upper())) is cls  # names are case-insensitive
    x = torch.linspace(-3, 3, 13)
    for name, function in FUNCTIONS.items():
        assert torch.allclose(activation_layer(name)(x), function(x)), name
    with pytest.raises(ValueError, match=r"^unknown activation 'swish'; use one of sigmoid, relu, tanh, "
                                         r"leakyrelu, prelu, none$"):
        activation_layer("swish")


def test_length_mask_by_hand():
    mask = length_mask(torch.tensor([0, 2, 4, 1]), 4)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[False] * 4, [True, True, False, False], [True] * 4, [True, False, False, False]]
    assert length_mask(torch.tensor([3]), 5).tolist() == [[True, True, True, False, False]]
    # the positions are made on the lengths' device (on a GPU run a CPU arange would fail; "meta" shows it)
    on_meta = length_mask(torch.tensor([1, 3], device="meta"), 4)
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 4) and on_meta.dtype == torch.bool


@pytest.mark.parametrize("kwargs, message", [
    ({"attention_input": "sum"}, r"^attention_input must be one of \('concat', 'din'\), got 'sum'$"),
    ({"weight_activation": "softmax"},
     r"^attention weight activation must be one of \('none', 'sigmoid'\), got 'softmax'$"),
    ({"hidden_size": []}, r"^attention_hidden_size needs at least one layer, e\.g\. \[80, 40\]$"),
])
def test_bad_settings_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActivationUnit(4, **kwargs)


@pytest.mark.parametrize("attention_input", ATTENTION_INPUTS)
def test_parameters_of_the_decomposed_first_layer_and_the_mlp(attention_input):
    unit = ActivationUnit(6, hidden_size=(5, 3, 2), attention_input=attention_input, activation="tanh")
    assert unit.attention_input == attention_input and unit.weight_activation == "none"
    shapes = {name: tuple(p.shape) for name, p in unit.named_parameters()}
    expected = {"key_proj.weight": (5, 6), "key_proj.bias": (5,), "query_proj.weight": (5, 6),
                "mlp.1.weight": (3, 5), "mlp.1.bias": (3,), "mlp.3.weight": (2, 3), "mlp.3.bias": (2,),
                "mlp.5.weight": (1, 2), "mlp.5.bias": (1,)}
    if attention_input == "din":
        expected["product_proj.weight"] = (5, 6)
    else:
        assert unit.product_proj is None
    assert shapes == expected
    assert [type(layer) for layer in unit.mlp] == [nn.Tanh, nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    default = ActivationUnit(4)  # DIN's unit: [80, 40], sigmoid, concat input, raw weights
    assert [tuple(p.shape) for p in default.mlp.parameters()] == [(40, 80), (40,), (1, 40), (1,)]
    assert type(default.mlp[0]) is nn.Sigmoid and default.product_proj is None


def reference(unit, keys, query, mask, activation, values=None):
    """The unit's output for aligned queries, written out from its parameters: weight_t = MLP(W_e e_t + b +
    W_q q [+ W_p (e_t * q)]), raw or through a sigmoid, 0 at padding; pooled = sum_t weight_t * value_t."""
    p = dict(unit.named_parameters())
    act = FUNCTIONS[activation]
    if activation == "prelu":  # PReLU's slope is a parameter of the unit (one per PReLU layer)
        slopes = iter(layer.weight for layer in unit.mlp if isinstance(layer, nn.PReLU))
        act = lambda x: F.prelu(x, next(slopes))  # noqa: E731
    q = query.unsqueeze(1).expand_as(keys)
    hidden = keys @ p["key_proj.weight"].T + p["key_proj.bias"] + q @ p["query_proj.weight"].T
    if unit.attention_input == "din":
        hidden = hidden + (keys * q) @ p["product_proj.weight"].T
    linears = sorted(int(name.split(".")[1]) for name in p if name.startswith("mlp.") and name.endswith(".bias"))
    hidden = act(hidden)
    for k, index in enumerate(linears):
        hidden = hidden @ p[f"mlp.{index}.weight"].mT + p[f"mlp.{index}.bias"]
        if k < len(linears) - 1:
            hidden = act(hidden)
    weights = hidden.squeeze(-1)
    if unit.weight_activation == "sigmoid":
        weights = torch.sigmoid(weights)
    weights = torch.where(mask, weights, torch.zeros_like(weights))
    values = keys if values is None else values
    return (weights.unsqueeze(-1) * values).sum(1), weights


CASES = [("concat", "none", "sigmoid"), ("din", "none", "relu"), ("concat", "sigmoid", "tanh"),
         ("din", "sigmoid", "none"), ("concat", "none", "leakyrelu"), ("din", "none", "prelu")]


def _random_unit(seed, attention_input, weight_activation, activation):
    """A unit with every weight and bias drawn from N(0, 1), so a dropped term is visible."""
    torch.manual_seed(seed)
    unit = ActivationUnit(6, hidden_size=[7, 3], attention_input=attention_input, activation=activation,
                          weight_activation=weight_activation)
    for layer in unit.modules():
        if isinstance(layer, nn.Linear):
            for parameter in layer.parameters():
                nn.init.normal_(parameter)
    return unit


def _inputs(seed=0, b=4, t=5, d=6, c=3):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(b, t, d, generator=g)
    mask = length_mask(torch.tensor([0, 5, 2, 3])[:b], t)
    return keys, torch.randn(b, d, generator=g), torch.randn(c, d, generator=g), mask


@pytest.mark.parametrize("attention_input, weight_activation, activation", CASES)
@pytest.mark.parametrize("grad", [True, False])
def test_aligned_forward_equals_the_written_out_unit(attention_input, weight_activation, activation, grad):
    unit = _random_unit(1, attention_input, weight_activation, activation)
    keys, query, _, mask = _inputs()
    values = torch.randn(4, 5, 2)
    with torch.set_grad_enabled(grad):  # without gradients the activations run in place (_mlp)
        pooled, weights = unit(keys, query, mask)
        pooled_values, weights_values = unit(keys, query, mask, values=values)
    want_pooled, want_weights = reference(unit, keys, query, mask, activation)
    assert weights.shape == (4, 5) and pooled.shape == (4, 6)
    assert torch.allclose(weights, want_weights, atol=1e-5) and torch.allclose(pooled, want_pooled, atol=1e-4)
    assert (weights[~mask] == 0).all() and (weights[mask] != 0).all()
    assert torch.equal(weights_values, weights)
    assert torch.allclose(pooled_values, reference(unit, keys, query, mask, activation, values)[0], atol=1e-4)
    assert pooled[0].abs().sum() == 0  # a row without history pools nothing


@pytest.mark.parametrize("attention_input, weight_activation, activation", CASES)
@pytest.mark.parametrize("grad", [True, False])
def test_cross_forward_is_the_aligned_one_per_candidate(attention_input, weight_activation, activation, grad):
    unit = _random_unit(2, attention_input, weight_activation, activation)
    keys, _, candidates, mask = _inputs(seed=3)
    values = torch.randn(4, 5, 2)
    with torch.set_grad_enabled(grad):
        pooled, weights = unit(keys, candidates, mask, cross=True, values=values)
    assert pooled.shape == (4, 3, 2) and weights.shape == (4, 3, 5)
    for c in range(3):
        want_pooled, want_weights = reference(unit, keys, candidates[c].expand(4, -1), mask, activation, values)
        assert torch.allclose(weights[:, c], want_weights, atol=1e-5), c
        assert torch.allclose(pooled[:, c], want_pooled, atol=1e-4), c


def test_inference_path_leaves_its_input_alone_and_keeps_gradients_when_enabled():
    torch.manual_seed(3)
    unit = ActivationUnit(6, hidden_size=[4])
    keys, query, _, mask = _inputs()
    copy = keys.clone()
    with torch.no_grad():
        unit(keys, query, mask)
    assert torch.equal(keys, copy)
    pooled, _ = unit(keys, query, mask)
    pooled.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unit.parameters())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_inference_runs_sigmoid_relu_tanh_in_place_and_other_activations_as_modules(activation):
    """Without gradients (full sort), sigmoid / relu / tanh / none run as in-place tensor functions, saving a
    (B, C, T, H) temporary per layer; their modules are not called. With gradients every module is."""
    unit = ActivationUnit(6, hidden_size=[4, 3], activation=activation)
    called = []
    for layer in unit.mlp:
        if not isinstance(layer, nn.Linear):
            layer.register_forward_hook(lambda module, args, out: called.append(type(module)))
    keys, query, _, mask = _inputs()
    with torch.no_grad():
        unit(keys, query, mask)
    in_place = activation in ("sigmoid", "relu", "tanh", "none")
    assert called == ([] if in_place else [CLASSES[activation]] * 2)
    called.clear()
    unit(keys, query, mask)
    assert called == [CLASSES[activation]] * 2
