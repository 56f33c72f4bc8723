"""Search spaces: which settings a tuning run may change, and within what range.

A space file maps config keys to distributions. The project's yaml files (``properties/hyper/<Model>.yaml``,
``properties/hyper/sid.yaml``) write them as calls::

    learning_rate: loguniform(1e-4, 1e-2)     # bounds as values
    dropout_prob: uniform(0.0, 0.3)
    embedding_size: choice([32, 64])
    n_layers: int(1, 3)
    mlp_hidden_size: choice([[256, 128], [128, 64]])
    sid_quantizer_options.prefix_weight: choice([0.5, 1.0, auto])   # a key inside a dict setting

RecBole's own hyper-parameter files (one ``key type args`` per line, as for ``run_hyper.py``) are read
too, with RecBole's meaning of the arguments: ``learning_rate loguniform -8,0`` is e^-8 .. e^0,
``embedding_size choice [64,96]``, ``dropout_prob uniform 0.0,0.5``, ``reg_weight quniform 0,1,0.1``.
"""
import ast
import hashlib
import json
import math
import os
import re

import yaml

from recbole_psrq.errors import ConfigError
from recbole_psrq.quick_start import PROPERTIES_DIR

HYPER_DIR = os.path.join(PROPERTIES_DIR, "hyper")
KINDS = ("loguniform", "uniform", "quniform", "int", "choice")


class Param:
    """One dimension: ``kind`` in KINDS; ``low``/``high``/``step`` for ranges, ``values`` for choice."""

    def __init__(self, key, kind, low=None, high=None, step=None, values=None):
        self.key, self.kind, self.low, self.high, self.step = key, kind, low, high, step
        self.values = list(values) if values is not None else None

    def to_dict(self):
        return {k: v for k, v in vars(self).items() if v is not None}

    def describe(self):
        if self.kind == "choice":
            return f"choice({json.dumps(self.values)})"
        if self.kind == "quniform":
            return f"quniform({self.low:g}, {self.high:g}, {self.step:g})"
        return f"{self.kind}({self.low:g}, {self.high:g})"

    def distribution(self):
        """The Optuna distribution. Choices are passed to Optuna as JSON text, so list values
        (e.g. layer sizes) are allowed; :meth:`value` turns them back."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution([json.dumps(v) for v in self.values])
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        if self.kind == "quniform":
            return FloatDistribution(self.low, self.high, step=self.step)
        return FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def value(self, sampled):
        return json.loads(sampled) if self.kind == "choice" else sampled


class Space:
    """An ordered set of :class:`Param` with the files it was read from."""

    def __init__(self, params, sources=()):
        self.params = {p.key: p for p in params}
        self.sources = list(sources)

    def __len__(self):
        return len(self.params)

    def without(self, keys):
        """The space minus the keys an experiment fixes (they are not the tuner's to change)."""
        fixed = set(keys)
        return Space([p for k, p in self.params.items() if k not in fixed and k.split(".")[0] not in fixed],
                     self.sources)

    def to_dict(self):
        return {k: p.to_dict() for k, p in self.params.items()}

    def describe(self):
        return {k: p.describe() for k, p in self.params.items()}

    def hash(self):
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def grid(self):
        """Every combination of a space of choices only, as Optuna params (None when a range is in it)."""
        import itertools

        if not self.params or any(p.kind != "choice" for p in self.params.values()):
            return None
        keys = list(self.params)
        options = [[json.dumps(v) for v in self.params[k].values] for k in keys]
        return [dict(zip(keys, combination)) for combination in itertools.product(*options)]

    def distributions(self):
        return {k: p.distribution() for k, p in self.params.items()}

    def values(self, sampled):
        """Optuna's sampled params -> config values, in the space's order."""
        return {k: self.params[k].value(sampled[k]) for k in self.params}


def _number(text, where):
    text = str(text).strip()
    for kind in (int, float):  # float() reads 1e-4, which yaml 1.1 leaves a string
        try:
            return kind(text)
        except ValueError:
            pass
    raise ConfigError(f"{where}: '{text}' is not a number.")


def _check_range(param, where):
    if not param.low < param.high:
        raise ConfigError(f"{where}: the lower bound must be below the upper bound, got "
                          f"{param.low} and {param.high}.")
    if param.kind == "loguniform" and param.low <= 0:
        raise ConfigError(f"{where}: loguniform needs bounds > 0, got {param.low}.")
    return param


_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.S)


def parse_entry(key, spec, where):
    """One entry of a project space file: ``loguniform(1e-4, 1e-2)``, ``choice([...])``..."""
    match = _CALL.match(str(spec))
    if not match or match.group(1) not in KINDS:
        raise ConfigError(f"{where}: '{key}: {spec}' is not a distribution; write one of "
                          "loguniform(low, high), uniform(low, high), quniform(low, high, step), "
                          "int(low, high), choice([a, b, ...]).")
    kind, args = match.groups()
    if kind == "choice":
        values = yaml.safe_load(args)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: choice for '{key}' needs a non-empty list, e.g. choice([32, 64]); "
                              f"got {args}.")
        return Param(key, "choice", values=values)
    parts = [a for a in args.split(",") if a.strip()]
    expected = 3 if kind == "quniform" else 2
    if len(parts) != expected:
        raise ConfigError(f"{where}: {kind} for '{key}' takes {expected} numbers, got '{args}'.")
    numbers = [_number(a, where) for a in parts]
    if kind == "int" and not all(isinstance(n, int) for n in numbers):
        raise ConfigError(f"{where}: int for '{key}' takes whole numbers, got '{args}'.")
    return _check_range(Param(key, kind, *numbers), where)


def parse_recbole_line(line, where):
    """One line of a RecBole hyper file: ``key type args`` (RecBole's loguniform bounds are natural logs)."""
    parts = line.split(maxsplit=2)
    if len(parts) != 3:
        raise ConfigError(f"{where}: expected 'key type args' (e.g. 'learning_rate loguniform -8,0'), "
                          f"got '{line}'.")
    key, kind, args = parts
    if kind == "choice":
        try:
            values = ast.literal_eval(args)
        except (ValueError, SyntaxError):
            raise ConfigError(f"{where}: choice for '{key}' needs a Python list, got '{args}'.") from None
        return Param(key, "choice", values=list(values))
    numbers = [_number(a, where) for a in args.split(",")]
    if kind == "loguniform" and len(numbers) == 2:
        return _check_range(Param(key, "loguniform", math.exp(numbers[0]), math.exp(numbers[1])), where)
    if kind == "uniform" and len(numbers) == 2:
        return _check_range(Param(key, "uniform", *numbers), where)
    if kind == "quniform" and len(numbers) == 3:
        return _check_range(Param(key, "quniform", *numbers), where)
    raise ConfigError(f"{where}: unsupported '{kind} {args}' for '{key}'; RecBole hyper files use choice "
                      "[..], uniform a,b, quniform a,b,q or loguniform a,b (natural-log bounds).")


def read_space(path):
    """A space file: the project's yaml (``key: kind(args)``) or RecBole's hyper format."""
    if not os.path.isfile(path):
        raise ConfigError(f"Search space file not found: {path}.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    params = []
    if path.endswith((".yaml", ".yml")):
        try:
            entries = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid yaml: {e}") from None
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: a search space maps config keys to distributions.")
        params = [parse_entry(k, v, f"{path}, key '{k}'") for k, v in entries.items()]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                params.append(parse_recbole_line(line.strip(), f"{path}, line {number}"))
    return Space(params, [path])


def default_space(model, uses_sids, quantizer):
    """``properties/hyper/<Model>.yaml`` (else ``default.yaml``), plus ``sid.yaml`` when the run has SID
    fields; PSRQ's prefix weight only when the quantizer is PSRQ."""
    model_file = os.path.join(HYPER_DIR, f"{model}.yaml")
    space = read_space(model_file if os.path.isfile(model_file) else os.path.join(HYPER_DIR, "default.yaml"))
    if uses_sids:
        sid = read_space(os.path.join(HYPER_DIR, "sid.yaml"))
        params = [p for p in sid.params.values()
                  if quantizer == "psrq" or not p.key.startswith("sid_quantizer_options.prefix_weight")]
        space = Space(list(space.params.values()) + params, space.sources + sid.sources)
    return space


def apply_values(values, base):
    """Config overrides for sampled ``values``: a dotted key updates that key inside the dict setting
    ``base[head]`` (the value the run would otherwise have), so the dict's other entries stay."""
    overrides = {}
    for key, value in values.items():
        if "." in key:
            head, sub = key.split(".", 1)
            current = overrides.get(head, dict(base.get(head) or {}))
            current[sub] = value
            overrides[head] = current
        else:
            overrides[key] = value
    return overrides
