"""The recipe search's space: the trainer's own flags, each a range or a set of choices, some only under another.

A parameter is named by its flag without the dashes (``label-smoothing``), as in config files. A trick that is off
at 0 (CutMix's alpha, erasing's p, stochastic depth, label smoothing) is searched as a switch ``with-KEY`` and,
when on, its value: TPE then models "off" as a choice of its own instead of as the low end of a range. The user
fixes a parameter (one value), narrows it (a shorter range, fewer choices) or adds any other flag of
``train_imagenet.py`` from the command line (``--space KEY=SPEC``) or a YAML file (``--space-file``).
"""
import dataclasses
import difflib
import math

import yaml

from engine.config import FLAGS, setting_key
from utils.errors import UserError

SWITCH_PREFIX = "with-"
GRID_POINTS = 3  # a range counts as its low end, middle and high end in the grid the search is compared with


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One searched flag: ``choices`` (a tuple), or a range ``low``..``high`` (``log``: sampled on a log scale),
    or ``fixed`` (a value set for every trial); searched only where every ``when`` entry (key -> allowed values)
    holds for the values drawn before it. ``off`` is the flag's value when its ``with-`` switch is off."""

    key: str
    choices: tuple = None
    low: float = None
    high: float = None
    log: bool = False
    when: tuple = ()  # ((key, (values...)), ...)
    off: object = None
    fixed: object = None
    is_fixed: bool = False

    @property
    def integer(self):
        return _flag(self.key).type is int

    def applies(self, drawn):
        return all(drawn.get(key) in values for key, values in self.when)

    def describe(self):
        if self.is_fixed:
            return f"{self.key}={self.fixed}"
        text = ",".join(str(value) for value in self.choices) if self.choices else \
            f"{self.low}:{self.high}{':log' if self.log else ''}"
        return f"{self.key}={text}" + (f" (or off: {self.off})" if self.off is not None else "") + \
            "".join(f" when {key} in {list(values)}" for key, values in self.when)


NAG_LIKE, ADAPTIVE = ("nag", "sgd"), ("lamb", "adamw")
MIXING = ((("mixup", (True,)),))
DEFAULT_SPACE = (
    Parameter("model", choices=("resnet18_v1", "resnet18_v1b", "resnet18_v1c", "resnet18_v1d")),
    Parameter("optimizer", choices=("nag", "lamb")),
    # One rate per kind of optimizer: NAG's per 256 images (linear scaling), LAMB's and AdamW's as given, as
    # timm's recipes give them; LAMB's decay is a hundred times NAG's.
    Parameter("lr-base", low=0.025, high=0.8, log=True, when=(("optimizer", NAG_LIKE),)),
    Parameter("lr", low=0.001, high=0.02, log=True, when=(("optimizer", ADAPTIVE),)),
    Parameter("wd", low=0.005, high=0.1, log=True, when=(("optimizer", ADAPTIVE),)),
    Parameter("lr-mode", choices=("step", "cosine")),
    Parameter("warmup-epochs", low=0, high=2),
    Parameter("last-gamma", choices=(False, True)),
    Parameter("no-wd", choices=(False, True)),
    Parameter("label-smoothing", low=0.05, high=0.2, off=0.0),
    Parameter("mixup", choices=(False, True)),
    Parameter("mixup-alpha", low=0.1, high=1.0, log=True, when=MIXING),
    Parameter("mixup-off-epoch", low=0, high=2, when=MIXING),
    Parameter("cutmix", low=0.2, high=1.0, off=0.0),
    # CutMix's switch: which of the mixed batches are cut, not blended; only where both are on.
    Parameter("mixup-switch-prob", low=0.0, high=1.0, when=(("mixup", (True,)), (SWITCH_PREFIX + "cutmix", (True,)))),
    Parameter("reprob", low=0.05, high=0.5, off=0.0),
    Parameter("model-ema", choices=(False, True)),
    Parameter("model-ema-decay", low=0.9, high=0.999, when=(("model-ema", (True,)),)),
    Parameter("drop-path", low=0.02, high=0.2, off=0.0),
    Parameter("bce-loss", choices=(False, True)),
    Parameter("auto-augment", choices=("none", "ta_wide", "rand-m9-n2")),
    Parameter("ra-reps", choices=(1, 2)),
)
NONE_CHOICE = "none"  # a choice that leaves the flag at its default (null), e.g. no --auto-augment policy


def _fields():
    return {setting_key(field.name): field for field in FLAGS}


def _flag(key):
    return _fields()[key]


def _check_key(key, where):
    fields = _fields()
    if key not in fields:
        closest = difflib.get_close_matches(key, list(fields) + [p.key for p in DEFAULT_SPACE], n=1, cutoff=0)
        raise UserError(f"{where}: unknown parameter {key!r}; did you mean {closest[0]}? (parameters are the flags "
                        "of `train_imagenet.py --help`, without their dashes)")
    return fields[key]


def _typed(key, value, where):
    """``value`` (text from the command line, or a YAML scalar) as the flag's type, checked against its bounds."""
    field = _check_key(key, where)
    spec = field.metadata["argparse"]
    if spec.get("action") is not None:  # a switch
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise UserError(f"{where}: {key} is a switch; give true, false or true,false, not {value!r}")
        return value
    kind = spec.get("type", str)
    try:
        typed = kind(value) if not (kind is int and isinstance(value, str) and "." in value) else int(float(value))
    except (TypeError, ValueError):
        expected = {int: "a whole number", float: "a number"}.get(kind, "text")
        raise UserError(f"{where}: {key} takes {expected}, not {value!r}") from None
    bounds = field.metadata["bounds"]
    if bounds is not None and typed not in bounds:
        raise UserError(f"{where}: {key} {typed} is out of its range; it must be {bounds}")
    if "choices" in spec and typed not in spec["choices"]:
        raise UserError(f"{where}: {key} {typed!r} is not one of {', '.join(spec['choices'])}")
    return typed


def parse_spec(key, spec, where):
    """A Parameter from the command line's ``SPEC`` text or a YAML file's value: one value fixes the flag,
    ``a,b,c`` (a YAML list) are choices, ``LOW:HIGH[:log]`` (a mapping ``{low, high, log}``) a range."""
    default = next((parameter for parameter in DEFAULT_SPACE if parameter.key == key), None)
    return dataclasses.replace(_parsed(key, spec, where, default.when if default else ()),
                               off=default.off if default else None)


def _parsed(key, spec, where, when):
    if isinstance(spec, dict):
        unknown = set(spec) - {"low", "high", "log"}
        if unknown or not {"low", "high"} <= set(spec):
            raise UserError(f"{where}: a range is {{low: L, high: H[, log: true]}}, not {spec!r}")
        low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
        return _range(key, low, high, log, when, where)
    if isinstance(spec, str) and ":" in spec:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise UserError(f"{where}: {key}={spec!r}: a range is LOW:HIGH or LOW:HIGH:log")
        return _range(key, parts[0], parts[1], len(parts) == 3, when, where)
    values = spec if isinstance(spec, list) else spec.split(",") if isinstance(spec, str) else [spec]
    if not values or any(value in ("", None) for value in values):
        raise UserError(f"{where}: {key} has no values; give one value, choices a,b,c or a range LOW:HIGH")
    typed = tuple(value if value == NONE_CHOICE else _typed(key, value, where) for value in values)
    if len(set(typed)) != len(typed):
        raise UserError(f"{where}: {key} lists a value twice: {list(values)}")
    if len(typed) == 1:
        return Parameter(key, fixed=typed[0], is_fixed=True, when=when)
    return Parameter(key, choices=typed, when=when)


def _range(key, low, high, log, when, where):
    low, high = _typed(key, low, where), _typed(key, high, where)
    if isinstance(low, (bool, str)):
        raise UserError(f"{where}: {key} is not a number; give its choices a,b,c instead of a range")
    if not low < high:
        raise UserError(f"{where}: {key}'s range {low}:{high} is empty; give LOW < HIGH (one value fixes it)")
    if log and low <= 0:
        raise UserError(f"{where}: {key}'s log range must start above 0, not at {low}")
    return Parameter(key, low=low, high=high, log=log, when=when)


def read_space_file(path):
    """KEY -> spec from a YAML file of ``key: value`` lines (see ``parse_spec``)."""
    try:
        with open(path) as handle:
            content = yaml.safe_load(handle) or {}
    except OSError as error:
        raise UserError(f"cannot read --space-file {path} ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise UserError(f"--space-file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(content, dict):
        raise UserError(f"--space-file {path} holds a {type(content).__name__}; write one `key: spec` a line")
    return {str(key).replace("_", "-"): (value, f"{path}: {key}") for key, value in content.items()}


def build_space(overrides):
    """The default space with ``overrides`` (KEY -> (spec, where), in order) applied: a default parameter is
    replaced, another flag added at the end."""
    space = {parameter.key: parameter for parameter in DEFAULT_SPACE}
    for key, (spec, where) in overrides.items():
        space[key] = parse_spec(key, spec, where)
    return tuple(parameter for parameter in space.values() if _can_apply(parameter, space))


def _can_apply(parameter, space):
    """Whether some trial can meet ``parameter``'s conditions: not if a parameter it depends on is fixed to a
    value outside them (CutMix's switch under ``cutmix=0``, the adaptive optimizers' rate under ``optimizer=nag``)."""
    for key, values in parameter.when:
        switch = key.startswith(SWITCH_PREFIX)
        parent = space.get(key[len(SWITCH_PREFIX):] if switch else key)
        if parent is not None and parent.is_fixed:
            value = parent.fixed != parent.off if switch else parent.fixed
            if value not in values:
                return False
        elif parent is not None and not switch and parent.choices is not None and \
                not set(parent.choices) & set(values):
            return False
    return True


def fit_budget(space, epochs):
    """The default range of ``mixup-off-epoch`` cut to the budget: the trainer refuses to leave every epoch
    without mixup."""
    fitted = []
    for parameter in space:
        if parameter.key == "mixup-off-epoch" and not parameter.is_fixed and parameter.choices is None and \
                parameter.high >= epochs:
            parameter = dataclasses.replace(parameter, high=epochs - 1) if parameter.low < epochs - 1 else \
                dataclasses.replace(parameter, fixed=0, is_fixed=True)
        fitted.append(parameter)
    return tuple(fitted)


def parse_cli_spec(text):
    """``KEY=SPEC`` from ``--space`` as (key, (spec, where))."""
    key, equals, spec = text.partition("=")
    if not equals:
        raise UserError(f"--space {text!r}: write KEY=VALUE, KEY=A,B,C or KEY=LOW:HIGH[:log]")
    return key.strip().replace("_", "-"), (spec.strip(), f"--space {text}")


def suggest(trial, space):
    """Draw the trial's parameters in declaration order; returns KEY -> value of every flag the trial sets."""
    drawn = {}
    for parameter in space:
        if not parameter.applies(drawn):
            continue
        key = parameter.key
        if parameter.is_fixed:
            drawn[key] = parameter.fixed
            if parameter.off is not None:
                drawn[SWITCH_PREFIX + key] = parameter.fixed != parameter.off
            continue
        if parameter.off is not None:
            drawn[SWITCH_PREFIX + key] = trial.suggest_categorical(SWITCH_PREFIX + key, [False, True])
            if not drawn[SWITCH_PREFIX + key]:
                drawn[key] = parameter.off
                continue
        if parameter.choices:
            drawn[key] = trial.suggest_categorical(key, list(parameter.choices))
        elif parameter.integer:
            drawn[key] = trial.suggest_int(key, int(parameter.low), int(parameter.high), log=parameter.log)
        else:
            drawn[key] = trial.suggest_float(key, parameter.low, parameter.high, log=parameter.log)
    return {key: value for key, value in drawn.items() if not key.startswith(SWITCH_PREFIX)}


def start_params(config, space, where):
    """The space's parameters (Optuna's names: ``with-KEY`` switches included) that give the recipe of ``config``
    (a trainer's TrainConfig), to enqueue as a first trial; the parameters the space fixes keep their fixed value.
    One line if the recipe lies outside the space."""
    fields, drawn, params = _fields(), {}, {}
    for parameter in space:
        if not parameter.applies(drawn):
            continue
        key = parameter.key
        value = getattr(config, fields[key].name)
        value = NONE_CHOICE if value is None and parameter.choices and NONE_CHOICE in parameter.choices else value
        if parameter.is_fixed:  # every trial's value, the first one's too
            drawn[key] = parameter.fixed
            if parameter.off is not None:
                drawn[SWITCH_PREFIX + key] = parameter.fixed != parameter.off
            continue
        if parameter.off is not None:
            params[SWITCH_PREFIX + key] = drawn[SWITCH_PREFIX + key] = value != parameter.off
            if value == parameter.off:
                drawn[key] = value
                continue
        inside = value in parameter.choices if parameter.choices else parameter.low <= value <= parameter.high
        if not inside:
            allowed = ", ".join(map(str, parameter.choices)) if parameter.choices else \
                f"{parameter.low}:{parameter.high}"
            raise UserError(f"{where}: its {key} {value!r} lies outside the space ({allowed}); widen it with "
                            f"--space {key}=...")
        params[key] = drawn[key] = value
    return params


def trial_flags(settings):
    """The trainer's command-line words for KEY -> value settings."""
    flags = []
    for key, value in settings.items():
        if value == NONE_CHOICE:
            continue
        if isinstance(value, bool):
            flags.append(f"--{key}" if value else f"--no-{key}")
        else:
            flags.append(f"--{key}={value!r}" if isinstance(value, float) else f"--{key}={value}")
    return flags


def grid_runs(space):
    """Runs in the full grid of ``space``: every choice, each range at GRID_POINTS values, a conditional parameter
    only under the values that enable it; counted parameter by parameter, keeping apart only the values that a
    later condition reads."""
    read_later = [set().union(*(dict(p.when) for p in space[index:])) for index in range(len(space) + 1)]
    states = {(): 1}  # the values later conditions read -> how many grid runs lead there
    for index, parameter in enumerate(space):
        next_states = {}
        for state, runs in states.items():
            drawn = dict(state)
            if not parameter.applies(drawn):
                outcomes = [drawn]
            elif parameter.is_fixed:
                outcomes = [{**drawn, parameter.key: parameter.fixed}]
            else:
                values = list(parameter.choices) if parameter.choices else [None] * GRID_POINTS
                outcomes = [{**drawn, SWITCH_PREFIX + parameter.key: True, parameter.key: value} for value in values]
                if parameter.off is not None:
                    outcomes.append({**drawn, SWITCH_PREFIX + parameter.key: False})
            for outcome in outcomes:
                kept = tuple(sorted((key, value) for key, value in outcome.items() if key in read_later[index + 1]))
                next_states[kept] = next_states.get(kept, 0) + runs
        states = next_states
    return sum(states.values())


def grid_size_text(runs):
    return f"{runs:,}" if runs < 1e9 else f"about 10^{math.log10(runs):.0f}"
