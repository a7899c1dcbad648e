"""Hand the tuned values to an existing component's own scalar inputs, with no adapter written by hand.

A training component written before hpo takes its hyperparameters as typed scalar inputs under its
own names (``learning_rate: float``, ``image_size: int``); KFP cannot index a ``dict`` output in the
pipeline DSL, and its ``dict`` outputs turn ints into floats. :func:`make_pick_component` builds a
small KFP component that reads the tuning step's ``tuned_train_args_json`` and returns one typed
output per input of yours, named after it::

    from hpo_kfp import make_pick_component

    pick = make_pick_component({
        "learning_rate": ("lr0", float),
        "momentum": ("momentum", float),
        "weight_decay": ("weight_decay", float),
        "optimizer": ("optimizer", str),
    })
    chosen = pick(tuned_train_args_json=tune.outputs["tuned_train_args_json"])
    train_yolo(learning_rate=chosen.outputs["learning_rate"], momentum=chosen.outputs["momentum"], ...)

The component runs on a plain Python image (default ``python:3.11-slim``) with the standard library
only: hpo is not installed there (KFP installs its own ``kfp`` package at start, as for any
lightweight component, unless ``install_kfp_package=False`` and the image has it).
"""

from __future__ import annotations

import keyword
import linecache
from collections.abc import Mapping
from typing import Any

from kfp import dsl

__all__ = ["make_pick_component", "PICK_INPUT", "PICK_TYPES"]

#: The generated component's one input: the tuning step's output of the same name.
PICK_INPUT = "tuned_train_args_json"
#: The output types a pick component can give (KFP's scalar parameter types).
PICK_TYPES = (float, int, str, bool)

_counter = 0


def _check(outputs: Mapping[str, Any], name: str) -> dict[str, tuple[str, str, bool, Any]]:
    from hpo import ConfigError

    if not name.replace("-", "_").isidentifier() or keyword.iskeyword(name.replace("-", "_")):
        raise ConfigError(f"name: {name!r} is not a component name; use letters, digits, '-' and '_', e.g. 'hpo-pick'")
    if not isinstance(outputs, Mapping) or not outputs:
        raise ConfigError(
            f"outputs: {outputs!r} names no output; give {{your_input: (train_arg, type)}}, e.g. {{'learning_rate': ('lr0', float)}}"
        )
    spec: dict[str, tuple[str, str, bool, Any]] = {}
    for out, how in outputs.items():
        if not isinstance(out, str) or not out.isidentifier() or keyword.iskeyword(out) or out.startswith("_"):
            raise ConfigError(
                f"outputs: {out!r} is not an output name KFP accepts; use a Python identifier not starting with '_'"
            )
        if out == PICK_INPUT:
            raise ConfigError(f"outputs: {out!r} is the component's input; name the output after your component's input")
        if not isinstance(how, tuple) or len(how) not in (2, 3):
            raise ConfigError(
                f"outputs: {out}={how!r} is not (train_arg, type) or (train_arg, type, default); e.g. ('lr0', float)"
            )
        key, kind = how[0], how[1]
        if not isinstance(key, str) or not key:
            raise ConfigError(f"outputs: {out}={how!r}: the train arg {key!r} must be a name such as 'lr0'")
        if kind not in PICK_TYPES:
            raise ConfigError(f"outputs: {out}={how!r}: type {kind!r} is not one of float, int, str, bool")
        has_default = len(how) == 3
        default = how[2] if has_default else None
        if has_default and not _fits(default, kind):
            raise ConfigError(f"outputs: {out}={how!r}: the default {default!r} is not a {kind.__name__}")
        spec[out] = (key, kind.__name__, has_default, default)
    return spec


def _fits(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    if kind is int:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, str)


# The component's code: a template whose SPEC line is filled in. KFP ships a lightweight
# component's source into the pod, so it imports nothing but the standard library.
_TEMPLATE = '''def {func}({input}: str) -> NamedTuple("Outputs", {annotation}):
    """Pick tuned train args (the tuning step's ``{input}``) as typed outputs named after a
    component's own inputs (hpo_kfp.make_pick_component)."""
    import json
    from collections import namedtuple

    spec = {spec}  # output: (train arg, type, has a default, default)
    args = json.loads({input})
    values = []
    for out, (key, kind, has_default, default) in spec.items():
        if key in args:
            value = args[key]
        elif has_default:
            value = default
        else:
            raise ValueError(
                f"{{out}}: the tuned train args have no {{key!r}} (they have: {{', '.join(sorted(args)) or 'none'}}); "
                "tune it in the space, fix it in train_args, or give the output a default"
            )
        if kind == "bool":
            ok = isinstance(value, bool)
        elif isinstance(value, bool):
            ok = False
        elif kind == "float":
            ok = isinstance(value, (int, float))
            value = float(value) if ok else value
        elif kind == "int":
            ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            value = int(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ValueError(f"{{out}}: {{key}}={{value!r}} is not a {{kind}}; map it to an output of its type")
        print(f"{{out}} = {{value!r}} (train arg {{key}})")
        values.append(value)
    return namedtuple("Outputs", list(spec))(*values)
'''


def make_pick_component(
    outputs: Mapping[str, tuple[Any, ...]],
    *,
    base_image: str = "python:3.11-slim",
    name: str = "hpo-pick",
    install_kfp_package: bool = True,
) -> dsl.PythonComponent:
    """A KFP component that gives the tuned train args as typed outputs named after your inputs.

    Its one input, ``tuned_train_args_json`` (str), takes the tuning step's output of that name
    (your fixed train args, what hpo chose such as the ``optimizer``, the best hyperparameters over
    them). Its outputs are one KFP parameter per item of ``outputs``, of the given type, so an
    existing component's own scalar inputs take them with no adapter written by hand.

    Args:
        outputs: ``{output: (train_arg, type)}`` or ``{output: (train_arg, type, default)}``:
            ``output`` your component's input name (a Python identifier), ``train_arg`` the
            Ultralytics train arg (``lr0``, ``momentum``, ``imgsz``), ``type`` one of ``float``,
            ``int``, ``str``, ``bool``; ``default`` is used when the tuned train args lack the key
            (without one, the step fails naming the key and the keys it has). An ``int`` output
            takes a whole float (``640.0`` -> ``640``), a ``float`` output an int; a value of
            another type fails the step with one line.
        base_image: the component's image: any image with Python 3.9+ (hpo is not needed there).
        name: the component's name (``hpo-pick``; give another to use two in one pipeline).
        install_kfp_package: let KFP pip-install its ``kfp`` package when the pod starts (the
            default for lightweight components); ``False`` when ``base_image`` has it.

    Returns:
        A KFP v2 lightweight Python component; call it in a ``@dsl.pipeline`` function with
        ``tuned_train_args_json=tune.outputs["tuned_train_args_json"]`` and read
        ``task.outputs["<output>"]``.

    Raises:
        hpo.errors.ConfigError: an output name that is no identifier (or is the input's name), a
            mapping that is not ``(train_arg, type[, default])``, a type not in :data:`PICK_TYPES`,
            a default of another type, or a bad ``name``.

    Example::

        pick = make_pick_component({"learning_rate": ("lr0", float), "image_size": ("imgsz", int)})
        chosen = pick(tuned_train_args_json=tune.outputs["tuned_train_args_json"])
        train(learning_rate=chosen.outputs["learning_rate"], image_size=chosen.outputs["image_size"])
    """
    global _counter
    spec = _check(outputs, name)
    func = name.replace("-", "_")
    annotation = "[" + ", ".join(f"({out!r}, {kind})" for out, (_, kind, _, _) in spec.items()) + "]"
    source = _TEMPLATE.format(func=func, input=PICK_INPUT, annotation=annotation, spec=repr(spec))
    _counter += 1
    # KFP reads a lightweight component's source with inspect.getsource: keep it in linecache under
    # a name of its own (mtime None: linecache.checkcache never drops it)
    filename = f"<hpo_kfp.pick {name} {_counter}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    from typing import NamedTuple

    namespace: dict[str, Any] = {"NamedTuple": NamedTuple}
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # real annotations: KFP reads them
    return dsl.component(base_image=base_image, install_kfp_package=install_kfp_package)(namespace[func])
