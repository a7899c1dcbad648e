"""Facts about the installed Ultralytics, read without importing torch where possible.

`hpo --help`, `hpo backends` and search-space validation must stay fast, so the train-argument
defaults, the typed key sets and the native tuner's default space are read from the installed
package's own files (``cfg/default.yaml``, ``cfg/__init__.py``, ``engine/tuner.py``) with ``ast``
instead of importing ``ultralytics`` (which imports torch, 3-4 s on a 2-core machine).
``tests/test_ultra.py`` checks every value read here against the imported package.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = [
    "ARG_ALIASES",
    "TASKS",
    "TASK_METRIC",
    "package_dir",
    "version",
    "train_defaults",
    "int_keys",
    "float_keys",
    "bool_keys",
    "str_keys",
    "integer_args",
    "str_arg_values",
    "str_arg_problem",
    "native_default_space",
    "arg_limits",
    "image_formats",
    "dataset_cache_version",
    "resolve_model",
    "task_metrics",
    "metric_direction",
]

#: Ultralytics tasks hpo tunes.
TASKS = ("detect", "segment", "classify", "pose", "obb")

#: Default objective per task, maximised (source: ``ultralytics.cfg.TASK2METRIC``, 8.4.x).
TASK_METRIC = {
    "detect": "metrics/mAP50-95(B)",
    "segment": "metrics/mAP50-95(M)",
    "classify": "metrics/accuracy_top1",
    "pose": "metrics/mAP50-95(P)",
    "obb": "metrics/mAP50-95(B)",
}

#: Names users bring from other trainers (PyTorch Lightning, timm, Keras, the Ultralytics v5 era)
#: for Ultralytics train arguments; error messages suggest the Ultralytics name.
ARG_ALIASES = {
    "lr": "lr0",
    "learning_rate": "lr0",
    "lr_final": "lrf",
    "wd": "weight_decay",
    "decay": "weight_decay",
    "batch_size": "batch",
    "bs": "batch",
    "img_size": "imgsz",
    "image_size": "imgsz",
    "imgsize": "imgsz",
    "num_workers": "workers",
    "epoch": "epochs",
    "warmup": "warmup_epochs",
}

# Validation losses each task reports (source: the tasks' ``loss_names``, Ultralytics 8.4.x).
_TASK_LOSSES = {
    "detect": ("box_loss", "cls_loss", "dfl_loss"),
    "segment": ("box_loss", "seg_loss", "cls_loss", "dfl_loss"),
    "classify": ("loss",),
    "pose": ("box_loss", "pose_loss", "kobj_loss", "cls_loss", "dfl_loss"),
    "obb": ("box_loss", "cls_loss", "dfl_loss"),
}


@functools.cache
def package_dir() -> Path:
    """The installed ``ultralytics`` package folder (no import).

    Raises:
        ConfigError: Ultralytics is not installed.
    """
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("ultralytics is not installed: pip install 'ultralytics>=8.4,<8.5'")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def version() -> str:
    """The installed Ultralytics version string, e.g. ``"8.4.190"``."""
    return importlib.metadata.version("ultralytics")


@functools.cache
def train_defaults() -> dict[str, Any]:
    """Every Ultralytics train/val argument and its default, from ``ultralytics/cfg/default.yaml``."""
    with open(package_dir() / "cfg" / "default.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


@functools.cache
def _module_constants(relpath: str) -> dict[str, ast.expr]:
    tree = ast.parse((package_dir() / relpath).read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
    return out


def _frozenset_constant(name: str) -> frozenset[str]:
    node = _module_constants("cfg/__init__.py")[name]
    if isinstance(node, ast.Call):  # frozenset({...})
        node = node.args[0]
    return frozenset(ast.literal_eval(node))


@functools.cache
def int_keys() -> frozenset[str]:
    """Integer-only train arguments (``ultralytics.cfg.CFG_INT_KEYS``)."""
    return _frozenset_constant("CFG_INT_KEYS")


@functools.cache
def float_keys() -> frozenset[str]:
    """Float train arguments (``CFG_FLOAT_KEYS | CFG_FRACTION_KEYS``)."""
    return _frozenset_constant("CFG_FLOAT_KEYS") | _frozenset_constant("CFG_FRACTION_KEYS")


@functools.cache
def bool_keys() -> frozenset[str]:
    """Boolean-only train arguments (``ultralytics.cfg.CFG_BOOL_KEYS``)."""
    return _frozenset_constant("CFG_BOOL_KEYS")


@functools.cache
def str_keys() -> frozenset[str]:
    """Text-only train arguments (``ultralytics.cfg.CFG_STR_KEYS``)."""
    return _frozenset_constant("CFG_STR_KEYS")


@functools.cache
def integer_args() -> frozenset[str]:
    """Train arguments that take whole numbers when given a range in a search space.

    Ultralytics' ``CFG_INT_KEYS`` plus every key whose type in ``cfg/default.yaml`` begins with
    ``int`` (its comment ``# (int ...)``): ``CFG_INT_KEYS`` misses ``batch`` (``# (int | float)``,
    in ``CFG_FLOAT_KEYS`` because ``0 < batch < 1`` is a fraction of GPU memory) and ``imgsz``
    (``# (int | list)``), whose ranges must still be integers: the data loader refuses
    ``batch=16.0`` (``batch_size should be a positive integer value``). Read from the installed version.
    """
    text = (package_dir() / "cfg" / "default.yaml").read_text(encoding="utf-8")
    declared = {m.group(1) for m in re.finditer(r"(?m)^(\w+):[^#\n]*#\s*\(int\b", text)}
    return int_keys() | frozenset(declared)


def _function(tree: ast.AST, name: str, owner: str | None = None) -> ast.FunctionDef | None:
    """The ``def name`` at module level or in ``class owner`` of a parsed file."""
    scopes: list[ast.AST] = [tree]
    if owner is not None:
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == owner]
    for scope in scopes:
        for node in getattr(scope, "body", []):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
    return None


def _str_constants(node: ast.AST) -> set[str]:
    """The string constants of a literal (a str, or a tuple/list/set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def _compared_strings(fn: ast.AST | None, variable: str) -> set[str]:
    """Strings a function compares ``variable`` (a name or an attribute) with (``==``, ``in``, ``not in``)."""
    out: set[str] = set()
    for node in ast.walk(fn) if fn is not None else ():
        if isinstance(node, ast.Compare):
            left = node.left
            named = (isinstance(left, ast.Name) and left.id == variable) or (
                isinstance(left, ast.Attribute) and left.attr == variable
            )
            if named:
                for comparator in node.comparators:
                    out |= _str_constants(comparator)
    return out


@functools.cache
def str_arg_values() -> dict[str, tuple[frozenset[str], bool]]:
    """The values Ultralytics' trainer accepts for its string train arguments (``check_cfg`` checks
    only that they are strings): ``{key: (values, case_insensitive)}``, read with ``ast`` from the
    installed version (``tests/test_ultra.py`` checks them against the running code):

    - ``optimizer``: the set ``optimizers`` in ``BaseTrainer.build_optimizer``
      (``engine/trainer.py``), ``auto`` included; matched case-insensitively, as it does;
    - ``copy_paste_mode``: the modes ``CopyPaste.__init__`` accepts (``data/augment.py``);
    - ``auto_augment``: the policies ``classify_augmentations`` compares with (``data/augment.py``;
      ``None`` turns it off).

    A key whose source no longer has that shape is left out (its values are then not checked).
    """
    out: dict[str, tuple[frozenset[str], bool]] = {}
    trainer = ast.parse((package_dir() / "engine" / "trainer.py").read_text(encoding="utf-8"))
    build = _function(trainer, "build_optimizer", "BaseTrainer")
    for node in ast.walk(build) if build is not None else ():
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "optimizers" for t in node.targets):
            names = _str_constants(node.value)
            if names:
                out["optimizer"] = (frozenset(names), True)
    augment = ast.parse((package_dir() / "data" / "augment.py").read_text(encoding="utf-8"))
    modes = _compared_strings(_function(augment, "__init__", "CopyPaste"), "mode")
    if modes:
        out["copy_paste_mode"] = (frozenset(modes), False)
    policies = _compared_strings(_function(augment, "classify_augmentations"), "auto_augment")
    if policies:
        out["auto_augment"] = (frozenset(policies), False)
    return out


def str_arg_problem(key: str, value: object) -> str | None:
    """Why Ultralytics' trainer would refuse ``value`` for the string train argument ``key``
    (:func:`str_arg_values`): ``"is not a value Ultralytics 8.4.190 accepts for optimizer (Adam, ...)"``;
    ``None`` when it accepts it or ``key`` is not such an argument."""
    known = str_arg_values().get(key)
    if known is None or (value is None and key == "auto_augment"):
        return None
    values, fold = known
    if isinstance(value, str) and ((value.lower() in {v.lower() for v in values}) if fold else value in values):
        return None
    listed = ", ".join(sorted(values, key=str.lower)) + (", or null: off" if key == "auto_augment" else "")
    case = "; any case" if fold else ""
    return f"is not a value Ultralytics {version()} accepts for {key} ({listed}{case})"


@functools.cache
def arg_limits() -> dict[str, tuple[float, float | None, bool]]:
    """The value range Ultralytics' ``check_cfg`` accepts per numeric train argument.

    Returns ``{key: (low, high, low_inclusive)}`` (``high`` ``None``: unbounded). Sources, in
    ``ultralytics/cfg/__init__.py`` of the installed version (read with ``ast``, checked against
    ``check_cfg`` itself in ``tests/test_ultra.py``):

    - ``CFG_FRACTION_KEYS``: ``[0.0, 1.0]`` (``fraction``: ``(0.0, 1.0]``, the ratio form);
    - ``scale``: ``[0.0, 1.0]`` (the explicit ``k == "scale"`` branch of ``check_cfg``);
    - ``CFG_INT_MIN``: ``[min, inf)`` for the integer counts it lists (``nbs``, ``max_det``, ...).

    Other keys (``CFG_FLOAT_KEYS`` such as ``degrees``, ``box``) have no range in Ultralytics.
    """
    out: dict[str, tuple[float, float | None, bool]] = {k: (0.0, 1.0, True) for k in _frozenset_constant("CFG_FRACTION_KEYS")}
    if "fraction" in out:
        out["fraction"] = (0.0, 1.0, False)
    out["scale"] = (0.0, 1.0, True)
    for key, low in ast.literal_eval(_module_constants("cfg/__init__.py")["CFG_INT_MIN"]).items():
        out[key] = (low, None, True)
    return out


@functools.cache
def image_formats() -> frozenset[str]:
    """Image file suffixes Ultralytics loads, lower case without the dot (``ultralytics.data.utils.IMG_FORMATS``)."""
    return frozenset(ast.literal_eval(_module_constants("data/utils.py")["IMG_FORMATS"]))


@functools.cache
def dataset_cache_version() -> str:
    """The version Ultralytics writes into, and requires of, a dataset ``.cache`` file
    (``DATASET_CACHE_VERSION`` of ``ultralytics/data/dataset.py``)."""
    return str(ast.literal_eval(_module_constants("data/dataset.py")["DATASET_CACHE_VERSION"]))


@functools.cache
def native_default_space() -> dict[str, tuple]:
    """The native tuner's default space ``{key: (low, high[, gain])}``.

    Source: the dict literal in ``ultralytics.engine.tuner.Tuner.__init__``
    (``self.space = args.pop("space", None) or {...}``) of the installed version, read with ``ast``.

    Raises:
        ConfigError: the installed tuner no longer has that literal (an untested Ultralytics).
    """
    tree = ast.parse((package_dir() / "engine" / "tuner.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Attribute) and t.attr == "space" for t in node.targets)
            and isinstance(node.value, ast.BoolOp)
            and isinstance(node.value.values[-1], ast.Dict)
        ):
            return {k: tuple(v) for k, v in ast.literal_eval(node.value.values[-1]).items()}
    raise ConfigError(f"cannot read the default space from Ultralytics {version()}: pin ultralytics>=8.4,<8.5")


_SCALE_RE = re.compile(r"(\d+)([nslmx])(.+)?$")


def _bundled_yaml(name: str) -> Path | None:
    root = package_dir() / "cfg" / "models"
    stem = Path(name).stem
    candidates = {name, _SCALE_RE.sub(r"\1\3", stem) + ".yaml"}
    for path in root.rglob("*.yaml"):
        if path.name in candidates:
            return path
    return None


def resolve_model(model: str) -> tuple[str, str]:
    """Check a model reference and find its task.

    Args:
        model: a bundled Ultralytics model YAML name (``"yolov8n.yaml"``, ``"yolo11n-cls.yaml"``),
            a path to a local model YAML, or a path to a local ``.pt`` checkpoint.

    Returns:
        ``(model, task)``: the model as Ultralytics should load it (local paths made absolute)
        and its task: for a ``.pt``, the task stored in the checkpoint (``train_args["task"]``,
        read without importing torch where the file allows); otherwise guessed from the name (``-cls`` classify, ``-seg``
        segment, ``-pose`` pose, ``-obb`` obb, else detect; Ultralytics' own naming convention).

    Raises:
        ConfigError: a ``.pt`` that is not a local file (hpo never downloads weights) or not a
            readable Ultralytics checkpoint, a YAML that is neither local nor bundled, or another suffix.
    """
    p = Path(model).expanduser()
    if p.suffix == ".pt":
        if not p.is_file():
            raise ConfigError(
                f"model: '{model}' is not a local file; hpo never downloads weights unless asked: "
                "give the path of a local .pt or a bundled model YAML such as yolov8n.yaml, or let Ultralytics "
                "fetch its official weights once with --download-weights (HPO_DOWNLOAD_WEIGHTS=1)"
            )
        resolved = str(p.resolve())
    elif p.suffix in (".yaml", ".yml"):
        if p.is_file():
            resolved = str(p.resolve())
        elif _bundled_yaml(p.name) is not None and p.name == model:
            resolved = model
        else:
            raise ConfigError(
                f"model: '{model}' is neither a local file nor a model YAML bundled with Ultralytics {version()}: "
                "use e.g. yolov8n.yaml, yolov8n-cls.yaml, yolo11n-seg.yaml"
            )
    else:
        raise ConfigError(f"model: '{model}' must be a model YAML (.yaml) or a local checkpoint (.pt)")
    stem = p.stem
    task = "detect"
    for suffix, name in (("-cls", "classify"), ("-seg", "segment"), ("-pose", "pose"), ("-obb", "obb")):
        if suffix in stem:
            task = name
    if p.suffix == ".pt":
        task = _checkpoint_task(resolved) or task
    return resolved, task


class _Inert:
    """Stands for every class and function a checkpoint's pickle names: nothing of them runs."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass


class _InertUnpickler(pickle.Unpickler):
    _ALLOWED = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        return _Inert

    def persistent_load(self, pid: Any) -> None:  # tensor storages: not read
        return None


def _checkpoint_without_torch(path: str) -> Any:
    """The top-level object of a checkpoint saved by ``torch.save`` (a zip holding ``<name>/data.pkl``),
    read without torch: every class and function the pickle names is replaced by an inert stand-in,
    so no code from the file runs and no tensor is loaded.

    Raises:
        ValueError: the file is not such a zip (let ``torch.load`` try).
    """
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(names) != 1:
            raise ValueError("not a torch.save zip with one data.pkl")
        with z.open(names[0]) as f:
            return _InertUnpickler(f).load()


def _checkpoint_task(path: str) -> str | None:
    """The task an Ultralytics checkpoint was trained for (``best.pt`` names say nothing), or ``None``
    when the checkpoint does not record one.

    Read without importing torch (1.4 s on a 2-core CPU) where the file allows
    (:func:`_checkpoint_without_torch`); else with ``torch.load`` on the CPU.

    Raises:
        ConfigError: the file cannot be read as a checkpoint (corrupt, truncated, not a pickle),
            or it is not an Ultralytics checkpoint (no ``model``/``ema`` entry, as Ultralytics'
            ``attempt_load_one_weight`` requires), naming the model file.
    """
    try:
        ckpt = _checkpoint_without_torch(path)
    except Exception:  # noqa: BLE001 - not a zip pickle we can read inertly: let torch try
        try:
            import torch

            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any failure means the file is no checkpoint
            detail = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"model: '{path}' is not a readable checkpoint ({detail}); give a .pt saved by Ultralytics "
                "training (weights/best.pt) or a model YAML such as yolov8n.yaml"
            ) from None
    if not isinstance(ckpt, dict) or (ckpt.get("model") is None and ckpt.get("ema") is None):
        kind = f"a {type(ckpt).__name__} without a 'model' entry" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise ConfigError(
            f"model: '{path}' is not an Ultralytics checkpoint (it holds {kind}); give a .pt saved by "
            "Ultralytics training (weights/best.pt) or a model YAML such as yolov8n.yaml"
        )
    args = ckpt.get("train_args")
    task = args.get("task") if isinstance(args, dict) else None
    return task if task in TASKS else None


def task_metrics(task: str) -> list[str]:
    """Every metric name a task reports after validation (imports Ultralytics).

    Source: the ``keys`` of the task's metrics class in ``ultralytics.utils.metrics`` plus the
    validation losses (``val/box_loss``, ...).
    """
    from ultralytics.utils import metrics as m

    cls = {
        "detect": m.DetMetrics,
        "segment": m.SegmentMetrics,
        "classify": m.ClassifyMetrics,
        "pose": m.PoseMetrics,
        "obb": m.OBBMetrics,
    }[task]
    return list(cls().keys) + [f"val/{x}" for x in _TASK_LOSSES[task]]


def metric_direction(metric: str) -> str:
    """``"minimize"`` for losses (names containing ``loss``), else ``"maximize"``."""
    return "minimize" if "loss" in metric else "maximize"
