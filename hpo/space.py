"""The search-space model shared by every backend.

A :class:`SearchSpace` maps Ultralytics train-argument names to :class:`Param` s. It is built from

- Ultralytics' own form ``{key: (low, high[, gain])}`` (the ``space=`` of ``model.tune``),
- explicit specs ``{key: {"type": "float"|"int"|"logfloat"|"choice", ...}}``,
- a YAML/JSON file holding either form, or inline JSON text.

Integer train arguments (:func:`hpo.ultra.integer_args`: Ultralytics' ``CFG_INT_KEYS`` plus
``batch`` and ``imgsz``) become integer parameters; every choice is checked as Ultralytics checks
that train argument (:func:`_choice_value`). Every backend converts from this one model (``to_ultralytics``, the optuna/ray plugins' own
converters), so every backend sees the same bounds and types per key.

Example:
    >>> space = SearchSpace.parse({"lr0": (1e-5, 1e-2), "close_mosaic": (0, 10)})
    >>> space["close_mosaic"].kind
    <Kind.INT: 'int'>
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import _yaml, ultra
from .errors import SpaceError, closest

__all__ = ["Kind", "Param", "SearchSpace", "load_yaml"]


def load_yaml(stream: Any) -> Any:
    """``yaml.safe_load`` that also reads exponent numbers without a dot (``1e-5``) as floats and
    refuses a mapping that repeats a key (:class:`hpo._yaml.DuplicateKeyError`)."""
    return _yaml.load_yaml(stream)


class Kind(str, enum.Enum):
    """Parameter kinds."""

    FLOAT = "float"
    INT = "int"
    CHOICE = "choice"


_NUMBER = (int, float)


def _is_number(x: Any) -> bool:
    return isinstance(x, _NUMBER) and not isinstance(x, bool)


@dataclass(frozen=True)
class Param:
    """One search-space parameter.

    Attributes:
        name: the Ultralytics train argument it sets (e.g. ``"lr0"``).
        kind: :class:`Kind`.
        low, high: inclusive bounds (numbers) for ``FLOAT``/``INT``; ``None`` for ``CHOICE``.
        log: sample on a log scale (``FLOAT``/``INT`` only; requires ``low > 0``).
        choices: the values of a ``CHOICE`` parameter (numbers, strings or booleans).
        gain: Ultralytics' mutation gain in [0, 1] (third item of its ``(low, high, gain)``
            form); used only by the ultralytics backend; default 1.0.
    """

    name: str
    kind: Kind
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = field(default=())
    gain: float = 1.0

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a legal value of this parameter."""
        if self.kind is Kind.CHOICE:
            return value in self.choices
        if not _is_number(value) or (self.kind is Kind.INT and not float(value).is_integer()):
            return False
        low, high = self.bounds
        return low <= value <= high

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a numeric parameter.

        Raises:
            SpaceError: a choice parameter has no bounds.
        """
        if self.low is None or self.high is None:
            raise SpaceError(f"space: '{self.name}' is a choice parameter: it has no (low, high) bounds")
        return float(self.low), float(self.high)

    def clip(self, value: float) -> float | int:
        """Clip a number into the bounds (and round it for ``INT``)."""
        low, high = self.bounds
        value = min(max(float(value), low), high)
        return int(round(value)) if self.kind is Kind.INT else float(value)

    def to_spec(self) -> dict[str, Any]:
        """The explicit spec of this parameter (the form stored in ``study.json``)."""
        if self.kind is Kind.CHOICE:
            return {"type": "choice", "choices": list(self.choices)}
        spec: dict[str, Any] = {"type": self.kind.value, "low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.gain != 1.0:
            spec["gain"] = self.gain
        return spec


class SearchSpace(Mapping[str, Param]):
    """An ordered, immutable mapping of train-argument name to :class:`Param`.

    Build it with :meth:`parse` (any accepted form) or :meth:`default`.
    """

    def __init__(self, params: Mapping[str, Param]):
        self._params = dict(params)

    # Mapping protocol
    def __getitem__(self, key: str) -> Param:
        return self._params[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_spec() == other.to_spec()

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_spec()!r})"

    # constructors
    @classmethod
    def default(cls) -> SearchSpace:
        """Ultralytics' own default tuner space, read from the installed version.

        Source: ``ultralytics.engine.tuner.Tuner.__init__`` (8.4.x): 26 keys such as
        ``lr0: (1e-5, 1e-2)``, ``momentum: (0.7, 0.98, 0.3)``, ``close_mosaic: (0, 10)`` (an integer key).
        """
        return cls.parse(ultra.native_default_space())

    @classmethod
    def parse(cls, source: SearchSpace | Mapping[str, Any] | str | Path | None) -> SearchSpace:
        """Build a space from any accepted form, validating every entry.

        Args:
            source: ``None`` (the default space); a ``SearchSpace``; a mapping
                ``{key: (low, high[, gain]) | [low, high] | {"type": ..., ...}}``; a path to a
                ``.yaml``/``.yml``/``.json`` file holding such a mapping; or inline JSON text.

                Explicit spec keys: ``type`` (``float``, ``int``, ``logfloat``, ``choice``), ``low``,
                ``high``, ``log`` (bool), ``choices`` (list), ``gain`` (0..1).

        Raises:
            SpaceError: a key that is not an Ultralytics train argument (naming the closest) or is
                a setting of the study (:data:`NOT_TUNABLE`), a key given twice, stray whitespace in
                a key, a single bound, inverted or equal bounds, a bound outside the range
                Ultralytics accepts for the key (:func:`hpo.ultra.arg_limits`), ``log`` with
                ``low <= 0``, a float bound on an integer key, a ``batch`` bound below 1 (AutoBatch
                and GPU-memory fractions are choices), a range on a true/false or text argument, a
                non-numeric bound, an empty choice list, a choice Ultralytics refuses for the key
                (:func:`_choice_value`), an unreadable file.
        """
        if source is None:
            return cls.default()
        if isinstance(source, SearchSpace):
            return source
        if isinstance(source, (str, Path)):
            source = _load_text_or_file(source)
        if not isinstance(source, Mapping):
            raise SpaceError(f"space: expected a mapping of train argument to bounds, got {type(source).__name__}")
        if not source:
            raise SpaceError("space: is empty; give at least one parameter or omit it for the default space")
        params = {}
        for key, value in source.items():
            name = _check_key(key)
            params[name] = _parse_param(name, value)
        return cls(params)

    # conversions
    def to_spec(self) -> dict[str, dict[str, Any]]:
        """``{key: explicit spec}``: JSON-serialisable, the form stored in ``study.json``."""
        return {k: p.to_spec() for k, p in self._params.items()}

    def to_optuna(self) -> dict[str, Any]:
        """The Optuna distribution of every key, same bounds and types (Optuna imported here).

        ``FLOAT`` -> ``FloatDistribution(low, high, log)``, ``INT`` -> ``IntDistribution(low, high, log)``,
        ``CHOICE`` -> ``CategoricalDistribution(choices)``. The Ultralytics mutation ``gain`` has no
        meaning for Optuna and is dropped. Used by the optuna backend and by the plots' importance
        evaluator (which rebuilds an Optuna study from any backend's records).
        """
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for key, p in self.items():
            if p.kind is Kind.CHOICE:
                out[key] = CategoricalDistribution(list(p.choices))
            elif p.kind is Kind.INT:
                low, high = p.bounds
                out[key] = IntDistribution(int(low), int(high), log=p.log)
            else:
                out[key] = FloatDistribution(*p.bounds, log=p.log)
        return out

    def to_ultralytics(self) -> dict[str, tuple]:
        """Ultralytics' ``{key: (low, high, gain)}`` form (numeric parameters only).

        Raises:
            SpaceError: the space has a choice parameter, which Ultralytics' form cannot express.
        """
        out = {}
        for k, p in self._params.items():
            if p.kind is Kind.CHOICE:
                raise SpaceError(f"space: '{k}' is a choice parameter, which Ultralytics' (low, high) form cannot hold")
            out[k] = (p.low, p.high, p.gain)
        return out

    def defaults(self) -> dict[str, Any]:
        """Ultralytics' default value of every key (``cfg/default.yaml``), clipped into the space.

        This is the configuration every backend evaluates first, as a reference point.
        """
        d = ultra.train_defaults()
        out = {}
        for k, p in self._params.items():
            v = d.get(k)
            if p.kind is Kind.CHOICE:
                out[k] = v if v in p.choices else p.choices[0]
            else:
                out[k] = p.clip(float(v) if v is not None and _is_number(v) else p.bounds[0])
        return out

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check that ``params`` sets exactly this space's keys with legal values; return them typed.

        Raises:
            SpaceError: a missing or extra key, or a value outside its parameter.
        """
        missing = set(self._params) - set(params)
        extra = set(params) - set(self._params)
        if missing or extra:
            raise SpaceError(f"params: missing {sorted(missing)} / unexpected {sorted(extra)} for this search space")
        out = {}
        for k, p in self._params.items():
            v = params[k]
            if not p.contains(v):
                raise SpaceError(f"params: {k}={v!r} is outside the space ({p.to_spec()})")
            out[k] = int(v) if p.kind is Kind.INT else (float(v) if p.kind is Kind.FLOAT else v)
        return out


def _load_text_or_file(source: str | Path) -> Any:
    text = str(source)
    stripped = text.strip()
    if isinstance(source, str) and stripped.startswith("{"):
        try:
            return _yaml.json_loads(stripped)
        except _yaml.DuplicateKeyError as e:
            raise SpaceError(
                f"space: inline JSON repeats the key {e.key!r}; the last value would silently replace the first: keep one"
            ) from None
        except json.JSONDecodeError as e:
            raise SpaceError(f"space: inline JSON is invalid ({e.msg} at char {e.pos}); fix the JSON text") from None
    path = Path(text).expanduser()
    if not path.is_file():
        raise SpaceError(f"space: file '{text}' does not exist; give a YAML/JSON file or inline JSON")
    try:
        with open(path, encoding="utf-8") as f:
            return _yaml.json_loads(f.read()) if path.suffix == ".json" else load_yaml(f)
    except _yaml.DuplicateKeyError as e:
        where = f" at line {e.line} (first at line {e.first_line})" if e.line is not None else ""
        raise SpaceError(
            f"space: '{path}' repeats the key {e.key!r}{where}; the last value would silently replace the first: keep one"
        ) from None
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise SpaceError(f"space: cannot read '{path}': {str(e).splitlines()[0]}") from None


#: Train args a search space cannot hold, and what sets each instead.
NOT_TUNABLE = {
    "epochs": "use --epochs (every trial trains that many; the fidelity)",
    "data": "use --data",
    "model": "use --model",
    "device": "give it as a fixed train arg (device=0, device=0,1 or device=cpu)",
    "project": "use --output",
    "name": "use --name",
    "exist_ok": "hpo sets it for every trial",
    "resume": "--resume is an hpo tune option that continues the study",
    "task": "hpo takes it from the model (-cls, -seg, -pose, -obb)",
    "mode": "hpo always trains",
}


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise SpaceError(f"space: key {key!r} must be a string naming an Ultralytics train argument")
    valid = ultra.train_defaults()
    if key != key.strip():
        raise SpaceError(f"space: key {key!r} has stray whitespace; write '{key.strip()}'")
    if key not in valid:
        raise SpaceError(f"space: '{key}' is not an Ultralytics train argument{closest(key, valid, ultra.ARG_ALIASES)}")
    if key in NOT_TUNABLE:
        raise SpaceError(f"space: '{key}' cannot be tuned, it is a setting of the study: {NOT_TUNABLE[key]}")
    return key


#: Why ``batch`` bounds below 1 are refused (Ultralytics' ``cfg/default.yaml``: "-1 for AutoBatch,
#: or float in (0.0, 1.0) for GPU memory fraction"; every batch < 1 runs AutoBatch, BaseTrainer._setup_train).
_BATCH_SPECIAL = (
    "values below 1 are not batch sizes: -1 is Ultralytics' AutoBatch and 0 < batch < 1 a fraction of GPU memory, "
    "special values that pick the size themselves; tune sizes >= 1 (batch: [8, 64]), or list -1 among the choices "
    '({"type": "choice", "choices": [-1, 16, 32]}) or fix it as a train arg (batch=-1)'
)


def _a(value: Any) -> str:
    """``"an int"``, ``"a str"``: the type of ``value`` with its article, for messages."""
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _choice_value(name: str, value: Any) -> Any:
    """One choice of ``name``, checked as Ultralytics' ``check_cfg`` (and, for string args, its
    trainer) checks that train argument; integral floats of integer args become ints."""
    default = ultra.train_defaults().get(name)
    typed = ultra.int_keys() | ultra.float_keys() | ultra.bool_keys() | ultra.str_keys() | {"scale", "compile"}
    shown = json.dumps(value) if isinstance(value, (bool, type(None), str, int, float)) else repr(value)
    bad = f"space: '{name}' choice {shown}"
    if value is None:
        if name == "amp" or (default is not None and name in typed and name != "auto_augment"):
            raise SpaceError(f"{bad} is refused by Ultralytics (its check_cfg: '{name}' must not be None); remove it")
        return value
    if name in ultra.bool_keys():
        if not isinstance(value, bool):
            raise SpaceError(f"{bad} is {_a(value)}; '{name}' takes true or false only")
        return value
    if name == "batch":
        if _is_number(value) and (value == -1 or 0 < value < 1):
            return value
        if _is_number(value) and value >= 1 and float(value).is_integer():
            return int(value)
        raise SpaceError(f"{bad} is not a batch: give whole sizes >= 1, -1 (AutoBatch) or a fraction in (0, 1) of GPU memory")
    if name in ultra.int_keys() or name == "imgsz":
        if not _is_number(value) or not float(value).is_integer():
            raise SpaceError(f"{bad} is not a whole number; '{name}' takes integers (e.g. {default})")
        if name == "imgsz" and value < 1:
            raise SpaceError(f"{bad} is not an image size; give whole numbers of pixels > 0")
        return int(value)
    if name in ultra.float_keys() or name == "scale":
        if isinstance(value, (bool, str)):
            raise SpaceError(f"{bad} is {_a(value)}; '{name}' takes numbers (e.g. {default})")
        return value
    if name in ultra.str_keys():
        if not isinstance(value, str):
            raise SpaceError(f"{bad} is {_a(value)}; '{name}' takes text (e.g. {default})")
        problem = ultra.str_arg_problem(name, value)
        if problem:
            raise SpaceError(f"{bad} {problem}; list only accepted values")
    return value


def _parse_param(name: str, value: Any) -> Param:
    is_int_key = name in ultra.integer_args()
    if isinstance(value, Mapping):
        spec = dict(value)
        kind = str(spec.pop("type", "float")).strip().lower()
        log = spec.pop("log", False)
        if kind in ("logfloat", "log-float", "loguniform", "log_float"):
            kind, log = "float", True
        if kind in ("categorical", "choice"):
            choices = spec.pop("choices", None)
            _no_extra(name, spec)
            if not isinstance(choices, (list, tuple)) or not choices:
                raise SpaceError(f"space: '{name}' choice needs a non-empty 'choices' list")
            choices = [_choice_value(name, c) for c in choices]
            if len(set(map(repr, choices))) != len(choices):
                raise SpaceError(f"space: '{name}' choices {list(choices)} repeat a value; list each once")
            _check_limits(name, [("choice", c) for c in choices if _is_number(c)])
            return Param(name, Kind.CHOICE, choices=tuple(choices))
        _no_range(name)
        if kind not in ("float", "int"):
            raise SpaceError(f"space: '{name}' has type '{kind}'; use float, int, logfloat or choice")
        if "low" not in spec or "high" not in spec:
            raise SpaceError(f"space: '{name}' needs both 'low' and 'high'")
        low, high, gain = spec.pop("low"), spec.pop("high"), spec.pop("gain", 1.0)
        _no_extra(name, spec)
        if not isinstance(log, bool):
            raise SpaceError(f"space: '{name}' log must be true or false, got {log!r}")
        if kind == "float" and is_int_key:
            raise SpaceError(f"space: '{name}' is an integer train argument; use type int")
        return _numeric(name, low, high, gain, log=log, integer=is_int_key or kind == "int")
    if isinstance(value, (list, tuple)):
        _no_range(name)
        if len(value) == 1:
            raise SpaceError(f"space: '{name}' has a single bound {list(value)}; give (low, high[, gain])")
        if len(value) not in (2, 3):
            raise SpaceError(f"space: '{name}' must be (low, high[, gain]), got {len(value)} items")
        gain = value[2] if len(value) == 3 else 1.0
        return _numeric(name, value[0], value[1], gain, log=False, integer=is_int_key)
    if _is_number(value):
        raise SpaceError(f"space: '{name}' has a single bound {value}; give (low, high[, gain]) or fix it as a train arg")
    raise SpaceError(f"space: '{name}' must be (low, high[, gain]) or a spec mapping, got {type(value).__name__}")


def _no_range(name: str) -> None:
    """A range only for numeric train args: a true/false or text arg is tuned as a choice."""
    if name in ultra.bool_keys():
        raise SpaceError(
            f'space: \'{name}\' takes true or false, not a range; tune it as a choice ({{"type": "choice", "choices": [true, false]}})'
        )
    if name in ultra.str_keys():
        raise SpaceError(
            f"space: '{name}' takes text, not a range; tune it as a choice of its values "
            f'({{"type": "choice", "choices": [...]}})'
        )


def _check_limits(name: str, values: list[tuple[str, float]]) -> None:
    """Bounds (``[("low", ..), ("high", ..)]``) or numeric choices must lie in the range Ultralytics'
    ``check_cfg`` accepts for the key (:func:`hpo.ultra.arg_limits`)."""
    limits = ultra.arg_limits().get(name)
    if limits is None:
        return
    lo, hi, lo_inclusive = limits
    for label, v in values:
        below = v < lo or (v == lo and not lo_inclusive)
        if below or (hi is not None and v > hi):
            span = f"outside {'[' if lo_inclusive else '('}{lo}, {hi}]" if hi is not None else f"below {lo}"
            raise SpaceError(
                f"space: '{name}' {label}={v} is {span}, which Ultralytics {ultra.version()} refuses for {name} "
                f"(its check_cfg); give bounds within {'[' if lo_inclusive else '('}{lo}, {hi if hi is not None else 'inf'}]"
            )


def _no_extra(name: str, spec: dict) -> None:
    if spec:
        raise SpaceError(f"space: '{name}' has unknown spec fields {sorted(spec)}; use type, low, high, log, gain, choices")


def _numeric(name: str, low: Any, high: Any, gain: Any, *, log: bool, integer: bool) -> Param:
    for label, v in (("low", low), ("high", high), ("gain", gain)):
        if not _is_number(v) or not math.isfinite(v):
            raise SpaceError(f"space: '{name}' {label}={v!r} must be a finite number")
    if name == "batch" and (low < 1 or high < 1):
        raise SpaceError(f"space: 'batch' {'low' if low < 1 else 'high'}={low if low < 1 else high}: {_BATCH_SPECIAL}")
    if name == "imgsz" and (low < 1 or high < 1):
        raise SpaceError(f"space: 'imgsz' bounds ({low}, {high}) must be whole numbers of pixels > 0")
    if integer:
        for label, v in (("low", low), ("high", high)):
            if isinstance(v, float) and not v.is_integer():
                raise SpaceError(f"space: '{name}' is an integer train argument but {label}={v} is fractional; use whole numbers")
        low, high = int(low), int(high)
    else:
        low, high = float(low), float(high)
    if low > high:
        raise SpaceError(f"space: '{name}' has inverted bounds low={low} > high={high}; swap them")
    if low == high:
        raise SpaceError(
            f"space: '{name}' has equal bounds low=high={low}, nothing to search; fix it as a train arg "
            f"({name}={low}) or widen the range"
        )
    _check_limits(name, [("low", low), ("high", high)])
    if log and low <= 0:
        raise SpaceError(f"space: '{name}' is log-scaled but low={low} <= 0; use a positive low bound")
    if not 0.0 <= gain <= 1.0:
        raise SpaceError(f"space: '{name}' gain={gain} must be within [0, 1]")
    return Param(name, Kind.INT if integer else Kind.FLOAT, low, high, log=log, gain=float(gain))
