"""The settings of a study, declared once: :class:`TuneSettings`.

Every user-facing setting of a study is one field of :class:`TuneSettings`, with its type, its
default, its unit, its group and its help text, and with how the command line and the Kubeflow
Pipelines component spell it (:class:`Cli`, :class:`Kfp`). What is built from it:

- :class:`hpo.Tuner` takes a :class:`TuneSettings` or the same fields as keyword arguments; its
  docstring's settings are generated from the help texts here (:func:`settings_doc`);
- ``hpo tune``'s options are generated from the :class:`Cli` of each field (:mod:`hpo.cli`), with
  the same flags, short flags, help and defaults;
- the KFP step (``hpo_kfp.step.run_tune_step``) takes a :class:`TuneSettings`, made from the
  component's parameters by :func:`from_kfp`; the component's literal signature
  (``hpo_kfp.components.hpo_tune``, KFP reads literals) is checked against the :class:`Kfp` of
  each field by ``tests/test_settings.py``;
- the benchmarks build :class:`TuneSettings`.

The values are the ones a user gives (``iterations="20"`` from a command line, ``time_budget="2h"``):
nothing is checked here. :func:`hpo.validate.build_config` checks them all and makes the
:class:`hpo.TuneConfig` a study runs with (one line per problem naming the field, the value and the fix).

Adding a setting: add a field here (its :func:`setting` declares the help, the CLI flags and the
KFP spelling), then its behaviour (validation in :func:`hpo.validate.build_config` if it needs
one, the code that uses it), and the parameter in the KFP component's signature (or a ``skip``
reason).

This module imports nothing of hpo but :mod:`hpo.errors`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import closest

__all__ = [
    "TuneSettings",
    "Cli",
    "Kfp",
    "Spec",
    "GROUPS",
    "REQUIRED",
    "DEPRECATED_WORKERS",
    "setting",
    "specs",
    "settings_doc",
    "from_kfp",
    "check_keywords",
    "python_wording",
    "WORDING",
]

#: The groups of settings, in the order the docs list them.
GROUPS = {
    "problem": "what a trial trains and measures",
    "search": "how the next trial is chosen",
    "budget": "how much the study may spend",
    "study": "where the study lives and how a run joins it",
    "final": "the final model, trained after the search",
    "display": "what the run shows and tracks",
}
Group = Literal["problem", "search", "budget", "study", "final", "display"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a setting that has none (it must be given).
REQUIRED: Any = _Required()

#: The line said when the deprecated ``workers`` (``--workers``, KFP ``workers``) is used.
DEPRECATED_WORKERS = (
    "hpo's 'workers' (trials at once) is deprecated and goes away in the next release: it is easily confused with "
    "Ultralytics' workers= train arg (data-loader workers); use concurrent_trials= (CLI: --concurrent-trials N)"
)


@dataclass(frozen=True)
class Cli:
    """How ``hpo tune`` spells a setting.

    Attributes:
        flags: the option's names (``("--backend", "-b")``); a boolean with a ``--no-`` form is
            one name ``"--plots/--no-plots"``.
        help: the option's help text.
        metavar: what ``--help`` shows for the value (``N``, ``DURATION``); ``None``: typer's own.
        type: the type the command line parses the value as (``str`` for counts that also take
            text such as ``"10"``, which :func:`hpo.validate.build_config` checks); ``None``: the
            field's own type.
        default: the option's default when it differs from the setting's (``...``: the same).
        to_setting: turns the option's value into the setting's (``--quiet`` gives ``verbose``).
    """

    flags: tuple[str, ...]
    help: str
    metavar: str | None = None
    type: Any = None
    default: Any = ...
    to_setting: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Kfp:
    """How the KFP component ``hpo_tune`` spells a setting (KFP parameters are plain literals:
    ``str``, ``int``, ``float``, ``bool``, ``dict``; no ``None``).

    Attributes:
        name: the parameter's name (default: the setting's).
        type: its type.
        default: its default in the component's signature.
        unset: says whether a value means "not given" (the setting is then ``None``); e.g. ``""``
            for an optional text, a negative ``seed``.
        skip: why the component does not expose the setting ("" when it does).
        value: the value the step uses for a skipped setting (``...``: the setting's default).
    """

    name: str | None = None
    type: Any = None
    default: Any = ...
    unset: Callable[[Any], bool] | None = None
    skip: str = ""
    value: Any = ...


@dataclass(frozen=True)
class Spec:
    """The declaration of one setting (the metadata of a :class:`TuneSettings` field).

    Attributes:
        name: the field's name (the ``Tuner`` keyword).
        group: one of :data:`GROUPS`.
        help: what the setting means, for the ``Tuner`` docstring and the docs (reStructuredText).
        unit: the unit of a number (``"seconds"``, ``"trials"``), or ``""``.
        cli: how ``hpo tune`` spells it (``None``: not an option of its own, e.g. train args are
            the trailing ``KEY=VALUE`` pairs).
        kfp: how the KFP component spells it.
        default: the field's default (:data:`REQUIRED` when it has none).
    """

    name: str
    group: Group
    help: str
    unit: str = ""
    cli: Cli | None = None
    kfp: Kfp = field(default_factory=Kfp)
    default: Any = REQUIRED


def _blank(value: Any) -> bool:
    return not str(value).strip()


def _negative(value: Any) -> bool:
    return value is None or value < 0


def _off(value: Any) -> bool:
    return not value


def _not_positive(value: Any) -> bool:
    return not value or value <= 0


def setting(
    default: Any = REQUIRED,
    *,
    group: Group,
    help: str,
    unit: str = "",
    cli: Cli | None = None,
    kfp: Kfp | None = None,
) -> Any:
    """A :class:`TuneSettings` field declared with its :class:`Spec` (see the module docstring)."""
    spec = Spec(name="", group=group, help=help, unit=unit, cli=cli, kfp=kfp or Kfp(), default=default)
    if default is REQUIRED:
        return field(metadata={"hpo": spec})
    return field(default=default, metadata={"hpo": spec})


@dataclass(frozen=True, kw_only=True)
class TuneSettings:
    """The settings of a study, as the user gives them (checked by :func:`hpo.validate.build_config`).

    Build it with keywords (``TuneSettings(model="yolov8n.yaml", data="coco8.yaml", iterations=20)``)
    and change it with :func:`dataclasses.replace`; :class:`hpo.Tuner` takes it, or the same keywords.
    The fields, by group, are documented in :class:`hpo.Tuner` (generated from the declarations
    below: :func:`settings_doc`).
    """

    backend: str = setting(
        "ultralytics",
        group="search",
        help="installed backend name (``hpo backends``).",
        cli=Cli(("--backend", "-b"), "Backend name (hpo backends)."),
    )
    model: str = setting(
        group="problem",
        help='bundled model YAML (``"yolov8n.yaml"``: trains from scratch) or local ``.pt``; never downloaded '
        "unless ``download_weights``.",
        cli=Cli(
            ("--model", "-m"),
            "Bundled model YAML (yolov8n.yaml: trains from scratch) or local .pt; never downloaded unless --download-weights.",
        ),
    )
    data: str | os.PathLike[str] = setting(
        group="problem",
        help="data YAML (detect/segment/pose/obb) or classification folder. A relative ``path:`` inside the YAML "
        "is relative to the YAML file.",
        cli=Cli(("--data", "-d"), "Data YAML, or classification folder."),
    )
    iterations: int | str | None = setting(
        None,
        group="budget",
        unit="trials",
        help="total finished trials of the study (>= 1; default 10, or no cap when a ``time_budget`` is given: "
        "then it is a cap); on resume, the total to reach.",
        cli=Cli(
            ("--iterations", "-n"),
            "Total finished trials of the study (default 10; with --time-budget: no cap unless given).",
            metavar="N",
            type=str,
        ),
        kfp=Kfp(type=int, default=10, unset=lambda v: v == 0),
    )
    time_budget: float | str | None = setting(
        None,
        group="budget",
        unit="seconds",
        help='wall-clock budget of the whole study: seconds, or text such as ``"90m"``, ``"2h"``, ``"1h30m"`` '
        "(:func:`hpo.validate.parse_duration`). No trial starts once it is spent; trials still running stop at "
        "their next epoch boundary and are recorded ``pruned`` (their partial curves still inform the sampler); "
        'the study ends normally (``TuneResult.stopped_by == "time_budget"``). The elapsed time is kept in the '
        "study (``study.json`` ``elapsed_s``), so ``resume`` continues with what is left (a resume may raise the "
        "budget; the change is recorded like a changed ``iterations``).",
        cli=Cli(
            ("--time-budget", "-t"),
            "Wall-clock budget of the whole study, over all its runs: seconds (3600) or 90m, 2h, 1h30m. No trial "
            "starts after it; running trials stop at their next epoch (pruned).",
            metavar="DURATION",
            type=str,
        ),
        kfp=Kfp(type=str, default="", unset=_blank),
    )
    epochs: int | str = setting(
        10,
        group="problem",
        unit="epochs",
        help="training epochs per trial (>= 1), the full fidelity.",
        cli=Cli(("--epochs", "-e"), "Training epochs per trial (the full fidelity).", metavar="N", type=str),
        kfp=Kfp(type=int),
    )
    output: str | os.PathLike[str] = setting(
        "runs/hpo",
        group="study",
        help="folder holding studies (default ``runs/hpo``), e.g. the mounted volume.",
        cli=Cli(("--output", "-o"), "Folder of studies (e.g. the mounted volume)."),
        kfp=Kfp(name="output_dir", type=str, default="studies"),
    )
    name: str | None = setting(
        None,
        group="study",
        help="study name (default ``<data name>-<backend>``); the study is ``output/name``.",
        cli=Cli(("--name",), "Study name (default <data>-<backend>)."),
        kfp=Kfp(name="study_name", type=str, default="", unset=_blank),
    )
    space: Any = setting(
        None,
        group="search",
        help="``None`` or ``\"default\"`` (the task's default space: the keys of Ultralytics' tuner space its "
        'trainer reads, :mod:`hpo.taskspace`), ``"ultralytics"`` (the 26-key tuner space of ``model.tune``), '
        "a mapping, a YAML/JSON file or inline JSON (see :meth:`hpo.SearchSpace.parse`). Without an optimizer in "
        "``train_args``, ``auto_optimizer`` decides what hpo does.",
        cli=Cli(
            ("--space", "-s"),
            "Search space: YAML/JSON file, inline JSON, or a name: default (the task's keys; the default) or "
            "ultralytics (model.tune's 26 keys).",
            type=str,
        ),
        kfp=Kfp(type=str, default="", unset=_blank),
    )
    auto_optimizer: str | None = setting(
        None,
        group="search",
        help="what hpo does when ``train_args`` give no optimizer (or ``optimizer=auto``, which ignores ``lr0`` "
        'and ``momentum``): ``"sgd"`` trains with ``optimizer=SGD`` when the space tunes ``lr0`` or '
        '``momentum``; ``"keep"`` keeps ``auto`` and leaves out of the default space what it ignores; '
        '``"resolve"`` sets the optimizer ``auto`` would pick for the trials and starts the search at its '
        "``lr0`` and ``momentum`` (:mod:`hpo.optimizer_policy`). ``None`` (default): the environment variable "
        '``HPO_AUTO_OPTIMIZER``, else ``"keep"``. A given optimizer is always used as given.',
        cli=Cli(
            ("--auto-optimizer",),
            "Without optimizer=: sgd, keep or resolve (default: env HPO_AUTO_OPTIMIZER, else keep).",
            metavar="POLICY",
        ),
        kfp=Kfp(skip="HPO_AUTO_OPTIMIZER in the pod's environment"),
    )
    metric: str | None = setting(
        None,
        group="problem",
        help="objective metric (default by task: detect ``metrics/mAP50-95(B)``, classify ``metrics/accuracy_top1``, "
        "segment ``metrics/mAP50-95(M)``, pose ``metrics/mAP50-95(P)``, obb ``metrics/mAP50-95(B)``), maximised "
        "(losses are minimised).",
        cli=Cli(("--metric",), "Objective metric (default by task, e.g. metrics/mAP50-95(B))."),
        kfp=Kfp(type=str, default="", unset=_blank),
    )
    resume: bool = setting(
        False,
        group="study",
        help="continue the existing study ``output/name`` up to ``iterations`` (a total below its finished trials "
        "does nothing and leaves the stored total as it is). Its data (path and content), train args (but "
        ":data:`hpo.resume.SILENT_TRAIN_ARGS`) and trainer must match the stored ones unless ``allow_changes``; "
        "its model, space, metric, epochs and backend always.",
        cli=Cli(("--resume",), "Continue the existing study up to --iterations."),
        kfp=Kfp(skip="the step resumes by itself when the study exists (a KFP retry of a killed pod, a re-run)"),
    )
    join: bool = setting(
        False,
        group="study",
        help="add this process to the study ``output/name`` that a live writer is running (backends with "
        "``supports_join``, e.g. optuna): its records go to ``trials.<host>-<pid>.jsonl``, it takes no lock and "
        "retries no interrupted trial; all processes together stop at ``iterations``, which must be the study's. "
        "Every stored setting (data, model, space, metric, epochs, backend, backend options, train args but "
        ":data:`hpo.resume.SILENT_TRAIN_ARGS`) must match. A study that no live process writes is refused "
        "(``resume`` continues it), unless it is finished already (nothing to do).",
        cli=Cli(
            ("--join",), "Add this process to a running study (same --output/--name; backends that support it, e.g. optuna)."
        ),
        kfp=Kfp(type=bool),
    )
    allow_changes: bool = setting(
        False,
        group="study",
        help="with ``resume``, accept changed data, train args or trainer: the study takes the new settings "
        "(``<study>/data.yaml`` is rewritten, the change is recorded in ``study.json`` ``resumes`` as a new "
        "settings version) and each trial records the version it trained under, which ``hpo show`` marks.",
        cli=Cli(
            ("--allow-changes",),
            "With --resume: continue with changed data or train args (a new settings version; hpo show marks each trial's).",
        ),
        kfp=Kfp(type=bool),
    )
    trial_timeout: float | None = setting(
        None,
        group="budget",
        unit="seconds",
        help="seconds before a trial is killed and recorded as failed.",
        cli=Cli(("--trial-timeout",), "Seconds before a trial is killed (failed).", type=float),
        kfp=Kfp(type=float, default=0.0, unset=_not_positive),
    )
    concurrent_trials: int | str = setting(
        1,
        group="budget",
        unit="trials",
        help="trials trained at once by this process (several GPUs: one each); not Ultralytics' ``workers`` train "
        "arg (data-loader workers), which goes in ``train_args``. ``workers=`` is its deprecated spelling (a "
        "``FutureWarning``; removed in the next release).",
        cli=Cli(
            ("--concurrent-trials", "-j"),
            "Trials trained at once (several GPUs: one each); Ultralytics' data-loader workers stay workers=N.",
            metavar="N",
            type=str,
        ),
        kfp=Kfp(type=int),
    )
    seed: int | None = setting(
        None,
        group="search",
        help="seed of the backend's sampler (``None``: random).",
        cli=Cli(("--seed",), "Seed of the backend's sampler.", type=int),
        kfp=Kfp(type=int, default=-1, unset=_negative),
    )
    verbose: bool = setting(
        False,
        group="display",
        help="show live progress on stderr (:mod:`hpo.progress`: a rich display on a terminal, plain lines with a "
        "heartbeat elsewhere).",
        cli=Cli(("--quiet", "-q"), "No progress display.", type=bool, default=False, to_setting=lambda quiet: not quiet),
        kfp=Kfp(skip="always on: plain progress lines with heartbeats in the pod's log", value=True),
    )
    mlflow: bool | None = setting(
        None,
        group="display",
        help="MLflow tracking (the observer plugin :mod:`hpo.tracking`, docs/mlflow.md): ``True`` on, ``False`` "
        "off, ``None`` (default) on when ``MLFLOW_TRACKING_URI`` is set or ``experiment`` given. Without "
        "``MLFLOW_TRACKING_URI`` it logs to ``sqlite:///<study>/mlflow.db``. Checked when the run starts.",
        cli=Cli(
            ("--mlflow/--no-mlflow",),
            "MLflow tracking: a parent run per study, a child run per trial (default: on when MLFLOW_TRACKING_URI is "
            "set; see docs/mlflow.md).",
        ),
        kfp=Kfp(skip="on when the pod's environment sets MLFLOW_TRACKING_URI (configure_tuning_task's secret or env)"),
    )
    experiment: str | None = setting(
        None,
        group="display",
        help="MLflow experiment name (default: the study name).",
        cli=Cli(("--experiment",), "MLflow experiment name (default: the study name)."),
        kfp=Kfp(skip="the MLflow experiment is the study name (study_name)"),
    )
    download_weights: bool | None = setting(
        None,
        group="problem",
        help="let Ultralytics fetch official weights named by ``model`` (``yolov8n.pt``) once, before the first "
        "trial, into ``weights_dir`` (:mod:`hpo.pretrained`); ``None`` (default): the environment variable "
        "``HPO_DOWNLOAD_WEIGHTS``, else off.",
        cli=Cli(
            ("--download-weights/--no-download-weights",),
            "Let Ultralytics fetch official weights named by --model (yolov8n.pt) once, before the first trial, into "
            "--weights-dir (default: env HPO_DOWNLOAD_WEIGHTS, else off).",
        ),
        # False (the component's default) leaves it to HPO_DOWNLOAD_WEIGHTS in the pod's environment
        kfp=Kfp(type=bool, default=False, unset=_off),
    )
    weights_dir: str | os.PathLike[str] | None = setting(
        None,
        group="problem",
        help="where fetched weights are kept (default ``<output>/pretrained``).",
        cli=Cli(("--weights-dir",), "Folder of fetched official weights (default <output>/pretrained)."),
        kfp=Kfp(skip="fetched weights go to <output>/pretrained on the volume"),
    )
    keep_weights: str | int = setting(
        "top-3",
        group="study",
        help='which trials keep ``trials/<id>/weights/*.pt`` (:mod:`hpo.weights`): ``"best"``, ``"top-K"`` '
        '(default ``"top-3"``) or ``"all"``; the others\' are deleted as trials finish '
        "(``<study>/weights/best.pt`` always stays).",
        cli=Cli(
            ("--keep-weights",),
            "Trials that keep their weights/*.pt; the others' are deleted as trials finish (<study>/weights/best.pt stays).",
            metavar="best|top-K|all",
        ),
        kfp=Kfp(type=str),
    )
    plots: bool | None = setting(
        None,
        group="display",
        help="draw ``<study>/plots/`` (PNGs and ``report.html``, :mod:`hpo.plots`) when the run ends; a plotting "
        "error is a warning, never a failed study. ``None`` (default): on, unless the environment sets "
        "``HPO_PLOTS=0`` (about 5 s per study on 2 CPU cores).",
        cli=Cli(
            ("--plots/--no-plots",), "Draw <study>/plots/ (PNGs, report.html) when the run ends (default: on unless HPO_PLOTS=0)."
        ),
        kfp=Kfp(skip="on unless HPO_PLOTS=0 in the pod's environment (the report output shows them)"),
    )
    final_epochs: int | str | None = setting(
        None,
        group="final",
        unit="epochs",
        help="after the search ends (normally: not after a failure or an interrupt), train the best ``final_top`` "
        "configurations for this many epochs, ``final_seeds`` times each with seeds no trial used, and score them on "
        "the data's test split (:mod:`hpo.final`; ``None`` or 0: no final stage). With a ``time_budget`` the search "
        "leaves the stage its estimated cost (:meth:`hpo.ledger.StudyLedger.final_reserve_s`) and the stage gets what "
        "is left. The result is :attr:`TuneResult.final`; a stage without a complete run raises "
        ":class:`~hpo.errors.RunFailedError` (``hpo final STUDY`` continues it).",
        cli=Cli(
            ("--final-epochs",),
            "After the search: train the best configuration(s) N epochs with fresh seeds and score them on the test split "
            "(the final model; default: none).",
            metavar="N",
            type=str,
        ),
        kfp=Kfp(type=int, default=0, unset=lambda v: v == 0),
    )
    final_seeds: int | str = setting(
        1,
        group="final",
        unit="runs",
        help="runs per configuration (>= 1; default 1): seeds ``seed+1 .. seed+R`` of the train arg ``seed`` "
        "(Ultralytics' default 0).",
        cli=Cli(
            ("--final-seeds",),
            "Final runs per configuration, seeds seed+1..seed+R of the train arg seed.",
            metavar="R",
            type=str,
        ),
        kfp=Kfp(type=int),
    )
    final_top: int | str = setting(
        1,
        group="final",
        unit="configurations",
        help="how many of the best configurations (>= 1; default 1).",
        cli=Cli(("--final-top",), "How many of the best configurations the final stage trains.", metavar="K", type=str),
        kfp=Kfp(type=int),
    )
    train_args: Mapping[str, Any] | None = setting(
        None,
        group="problem",
        help='fixed Ultralytics train args (``{"imgsz": 32, "device": "cpu"}``); on the command line the '
        "trailing ``KEY=VALUE`` pairs.",
        kfp=Kfp(type=dict, default={}),
    )
    backend_options: Mapping[str, Any] | None = setting(
        None,
        group="search",
        help="the backend's options (``hpo backends`` lists them); on the command line the trailing ``--option value`` pairs.",
        kfp=Kfp(type=dict, default={}),
    )
    trainer: str | None = setting(
        None,
        group="problem",
        help='``"module:function"`` that trains a trial (:mod:`hpo.trial`); default: the environment variable '
        "``HPO_TRAINER``, else Ultralytics (:data:`hpo.trial.ULTRALYTICS_TRAINER`). "
        '``"hpo.simulate:simulated_trainer"`` runs the study on simulated learning curves (milliseconds per '
        "trial; tests and benchmark simulations).",
        kfp=Kfp(skip="HPO_TRAINER in the pod's environment"),
    )
    trainer_options: Mapping[str, Any] | None = setting(
        None,
        group="problem",
        help="JSON-able options of the trainer (default: ``HPO_TRAINER_OPTIONS``, JSON).",
        kfp=Kfp(skip="HPO_TRAINER_OPTIONS in the pod's environment"),
    )

    def replace(self, **changes: Any) -> TuneSettings:
        """A copy with ``changes`` (:func:`dataclasses.replace`).

        Raises:
            TypeError: a name that is not a setting (naming the closest one).
        """
        check_keywords(changes, "TuneSettings.replace()")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """``{name: value}`` of every setting, values as given (not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def specs() -> Iterator[Spec]:
    """The :class:`Spec` of every setting, in declaration order (the order of ``hpo tune --help``)."""
    for f in dataclasses.fields(TuneSettings):
        spec: Spec = f.metadata["hpo"]
        default = f.default if f.default is not dataclasses.MISSING else REQUIRED
        yield dataclasses.replace(spec, name=f.name, default=default)


def check_keywords(given: Mapping[str, Any], where: str, *, also: tuple[str, ...] = ()) -> None:
    """Refuse a keyword that is no setting (nor one of ``also``), as Python refuses an unknown
    keyword argument, with the closest name.

    Raises:
        TypeError: ``"Tuner() got an unexpected keyword argument 'iteration' (did you mean 'iterations'?)"``.
    """
    names = [s.name for s in specs()] + list(also)
    for key in given:
        if key not in names:
            raise TypeError(f"{where} got an unexpected keyword argument {key!r}{closest(key, names)}")


#: Who reads hpo's error messages in this context: ``"python"`` (default: :class:`hpo.Tuner` says
#: ``iterations=...``, ``resume=True``) or ``"cli"`` (``hpo``'s commands set it: ``--iterations``,
#: ``--resume``). Messages are written in the command line's words; :func:`python_wording` turns them.
WORDING: contextvars.ContextVar[str] = contextvars.ContextVar("hpo_wording", default="python")

_FLAG_RE = re.compile(r"--([a-z][a-z0-9-]*)(?:[ =]((?:\d[\w.:]*)|'[^']*'|\"[^\"]*\"))?")


def python_wording(text: str, option_names: tuple[str, ...] | list[str] = ()) -> str:
    """A message written for ``hpo tune`` as a Python user reads it: a setting's flag becomes its
    :class:`hpo.Tuner` keyword (``--iterations 8`` -> ``iterations=8``, ``--resume`` ->
    ``resume=True``, ``--no-plots`` -> ``plots=False``, ``--name`` -> ``name=...``), a backend
    option's flag its ``backend_options`` key (``--grace-period 3`` ->
    ``backend_options={'grace_period': 3}``). Other text is left as it is.

    Args:
        text: the message.
        option_names: the backends' option names (underscored) to turn too.
    """
    words: dict[str, tuple[str, str | None]] = {}  # flag -> (keyword, its value for a bare flag or None)
    for spec in specs():
        if spec.cli is None:
            continue
        for flag in spec.cli.flags:
            for i, part in enumerate(flag.split("/")):
                if not part.startswith("--"):
                    continue
                if "/" in flag:
                    words[part[2:]] = (spec.name, "True" if i == 0 else "False")
                elif spec.cli.to_setting is not None and spec.cli.type is bool:  # --quiet: verbose=False
                    words[part[2:]] = (spec.name, repr(spec.cli.to_setting(True)))
                elif isinstance(spec.default, bool):
                    words[part[2:]] = (spec.name, "True")
                else:
                    words[part[2:]] = (spec.name, None)
    options = {n.replace("_", "-"): n for n in option_names}

    def turn(m: re.Match[str]) -> str:
        flag, value = m.group(1), m.group(2)
        if flag in words:
            name, fixed = words[flag]
            if fixed is not None:
                return f"{name}={fixed}" + (f" {value}" if value else "")
            return f"{name}={value}" if value else f"{name}=..."
        if flag in options:
            return f"backend_options={{'{options[flag]}': {value if value else '...'}}}"
        return m.group(0)

    return _FLAG_RE.sub(turn, text)


def settings_doc(indent: str = "    ") -> str:
    """The settings as a Google-style ``Args`` list (the :class:`hpo.Tuner` docstring), grouped by
    :data:`GROUPS`, each ``name: help``, wrapped at 100 columns."""
    import textwrap

    lines = []
    for group, what in GROUPS.items():
        lines.append(f"{indent}*{group.capitalize()}* ({what}):")
        lines.append("")
        for s in specs():
            if s.group != group:
                continue
            unit = f" Unit: {s.unit}." if s.unit and s.unit not in s.help else ""
            text = f"{s.name}: {s.help}{unit}"
            lines += textwrap.wrap(text, 100, initial_indent=indent + "    ", subsequent_indent=indent + "        ")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def from_kfp(params: Mapping[str, Any]) -> TuneSettings:
    """The :class:`TuneSettings` of the KFP component's parameters (spelled as :class:`Kfp` says).

    A parameter left out takes the component's default (:attr:`Kfp.default`); a value that means
    "not given" (``""``, ``0``, ``-1``: :attr:`Kfp.unset`) leaves the setting ``None``; a setting
    the component does not expose takes :attr:`Kfp.value` (or its default). The deprecated
    ``workers`` (``0``: not given) is ``concurrent_trials``, with a warning (the ``hpo`` logger).

    Raises:
        TypeError: a parameter that is no setting of the component (naming the closest one), or
            a required setting (``model``, ``data``) missing.
    """
    exposed = {s.kfp.name or s.name: s for s in specs() if not s.kfp.skip}
    for key in params:
        if key not in exposed and key != "workers":
            raise TypeError(f"the tuning component has no parameter {key!r}{closest(key, [*exposed, 'workers'])}")
    values: dict[str, Any] = {}
    for s in specs():
        if s.kfp.skip:
            if s.kfp.value is not ...:
                values[s.name] = s.kfp.value
            continue
        key = s.kfp.name or s.name
        if key in params:
            value = params[key]
        elif s.kfp.default is not ...:
            value = s.kfp.default
        else:
            continue
        values[s.name] = None if s.kfp.unset is not None and s.kfp.unset(value) else value
    if params.get("workers"):
        import logging

        logging.getLogger("hpo.kfp").warning(f"workers: {DEPRECATED_WORKERS}")
        values["concurrent_trials"] = params["workers"]
    return TuneSettings(**values)
