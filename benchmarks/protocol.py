"""The machine-readable benchmark protocol (``benchmarks/protocol.yaml``): its schema and loader.

The protocol names the problems (data, model, start, sizes, trial length, model.tune's iterations,
final schedule), the contenders with their exact options, the conditions (which contenders run
with which fixed train args and space), the evaluation and development seeds, the noise floor,
the statistics and the fidelity-transfer experiment. The harness (:mod:`hpo_bench.harness`) runs
exactly what it says; nothing about a run is chosen elsewhere except which part to run now.

Seeds (one protocol seed ``s`` per problem and condition):
    - ``s`` builds the shared initial weights of a from-scratch problem (``torch.manual_seed(s)``)
      and is every trial's training seed (Ultralytics' ``seed`` train arg; hpo's study seed);
    - the final trainings of every contender's incumbent on that seed use the same fresh seeds
      ``s * 100 + 1 .. s * 100 + final_seeds`` (never a trial's seed), so scores pair by seed;
    - the noise floor trains its configuration with seeds ``noise_floor.seed_base + 1 ..``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "Protocol",
    "ProblemSpec",
    "ContenderSpec",
    "ConditionSpec",
    "load_protocol",
    "recorded_protocol",
    "parse_seed_set",
    "final_seeds",
    "noise_seeds",
    "TASKS",
    "METRICS",
]

#: Ultralytics task of each dataset builder.
TASKS = {"digits-cls": "classify", "digits-det": "detect"}
#: The objective metric of each task (Ultralytics' own names; higher is better).
METRICS = {"classify": "metrics/accuracy_top1", "detect": "metrics/mAP50-95(B)"}


def parse_seed_set(text: str | int) -> list[int]:
    """``"1000-1009"`` (ends included), ``"100,102"``, ``"7"`` or ``7`` (that one seed); combined with commas.

    Raises:
        ValueError: an item that is not a seed or an ascending range (naming it).
    """
    seeds: list[int] = []
    for item in str(text).split(","):
        lo, dash, hi = item.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"seeds: '{item.strip()}' is not a seed or a range such as 1000-1009")
        if dash and int(hi) < int(lo):
            raise ValueError(f"seeds: the range '{item.strip()}' starts above its end; write {hi}-{lo}")
        seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    return sorted(set(seeds))


def final_seeds(seed: int, count: int) -> list[int]:
    """The fresh training seeds of every final training on protocol seed ``seed`` (module docstring)."""
    return [seed * 100 + r for r in range(1, count + 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarmStart(_Strict):
    """One training that makes a problem's starting checkpoint (trained once, shared by every seed).

    Attributes:
        epochs: epochs of that training, from scratch.
        params: its hyperparameters (train args over the problem's fixed ones).
        classes: digits it is trained on; ``None``: the problem's own classes and train split
            (a warm start); other digits: a checkpoint trained on OTHER classes (fine-tuning).
        images: canvases of its train set (``None``: the problem's train count); its val set is a fifth of it.
        seed: its training seed.
    """

    epochs: int = Field(ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    classes: list[int] | None = None
    images: int | None = Field(default=None, ge=1)
    seed: int = 0


class ProblemSpec(_Strict):
    """One problem. Sizes are chosen so that the metric moves within a few 2-core CPU epochs.

    Attributes:
        dataset: ``digits-cls`` (an image folder of the UCI digits) or ``digits-det`` (digits pasted on canvases).
        model: a bundled model YAML (``yolov8n-cls.yaml``, ``yolov8n.yaml``), built offline.
        start: ``shared-init`` (from scratch, every training of a seed from one initialisation built
            under ``torch.manual_seed(seed)``), ``warm-start`` (every training from the checkpoint of
            ``warm_start``) or ``scratch`` (each training builds its own initialisation).
        imgsz, batch: train args of every training (pixels; images per batch).
        split: fractions (train, val, test) of the 1,797 digits, stratified by class; detection
            canvases of a split draw their digits from that split's share only, so no test glyph is
            ever seen in training or selection.
        data_seed: seed of the split and of the canvases.
        classes: digits kept (``None``: all ten); detection class ids are their rank in this list.
        images: detection canvases per split (``train``, ``val``, ``test``); for ``digits-cls``,
            optional caps on the images per class of each split (``None``: every image of the share).
        digit_size, digits_per_image: detection canvases: inclusive ranges of a digit's side in
            pixels and of digits per canvas.
        warm_start: the starting checkpoint's training (``start: warm-start``).
        trial_epochs: epochs of every trial (model.tune's iterations and hpo's trials).
        iterations: model.tune's iterations; its wall time, launch to exit, is every other
            contender's time budget on that seed.
        final_epochs: epochs of each final training of an incumbent (and of the noise floor).
        final_seeds: final trainings per incumbent (fresh seeds); the score is their mean test objective.
        cap_s: wall-clock cap of a model.tune study in seconds (a hung study is killed there).
        final_cap_s: wall-clock cap of one final unit (all its seeds), seconds.
        train_args: further fixed Ultralytics train args of every training.
    """

    dataset: Literal["digits-cls", "digits-det"]
    model: str
    start: Literal["shared-init", "warm-start", "scratch"]
    imgsz: int = Field(ge=8)
    batch: int = Field(ge=1)
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    data_seed: int = 0
    classes: list[int] | None = None
    images: dict[Literal["train", "val", "test"], int] | None = None
    digit_size: tuple[int, int] = (20, 30)
    digits_per_image: tuple[int, int] = (1, 2)
    warm_start: WarmStart | None = None
    trial_epochs: int = Field(ge=1)
    iterations: int = Field(ge=1)
    final_epochs: int = Field(ge=1)
    final_seeds: int = Field(ge=1)
    cap_s: float = Field(default=1800, gt=0)
    final_cap_s: float = Field(default=1800, gt=0)
    train_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("split")
    @classmethod
    def _split(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x <= 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"{list(v)} must be three fractions > 0 that sum to 1, e.g. [0.6, 0.2, 0.2]")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) < 2 or len(set(v)) != len(v) or any(not 0 <= c <= 9 for c in v)):
            raise ValueError(f"{v} must be 2 or more distinct digits 0-9")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ProblemSpec:
        if self.start == "warm-start" and self.warm_start is None:
            raise ValueError("start: warm-start needs a warm_start: {epochs: ...} section")
        if self.start != "warm-start" and self.warm_start is not None:
            raise ValueError(f"warm_start: given, but start is {self.start}; set start: warm-start or remove it")
        if self.dataset == "digits-det" and (self.images is None or set(self.images) != {"train", "val", "test"}):
            raise ValueError("images: digits-det needs canvases per split, e.g. {train: 640, val: 128, test: 256}")
        if self.dataset == "digits-det" and self.digit_size[1] * 2 > self.imgsz:
            raise ValueError(f"digit_size: {list(self.digit_size)} is too large for imgsz {self.imgsz} (at most half of it)")
        if self.start == "warm-start" and self.warm_start and self.warm_start.classes and self.dataset != "digits-det":
            raise ValueError("warm_start.classes: pretraining on other classes is built for digits-det only")
        for key in ("epochs", "seed", "data", "model", "project", "name", "resume"):
            if key in self.train_args:
                raise ValueError(f"train_args: '{key}' is set by the protocol itself; remove it")
        return self

    @property
    def task(self) -> str:
        """Ultralytics task: ``classify`` or ``detect``."""
        return TASKS[self.dataset]

    @property
    def metric(self) -> str:
        """The objective metric (higher is better)."""
        return METRICS[self.task]

    @property
    def digits(self) -> list[int]:
        """The digits kept (all ten without ``classes``)."""
        return list(self.classes) if self.classes is not None else list(range(10))


class ContenderSpec(_Strict):
    """One way to tune.

    Attributes:
        kind: ``model.tune`` (Ultralytics' ``YOLO(model).tune(...)`` with only the problem's fixed
            args: no optimizer, no space unless the condition sets them), ``model.tune-ray``
            (``model.tune(use_ray=True)``), or ``hpo`` (a study through ``hpo.Tuner``).
        backend: the hpo backend (``kind: hpo``).
        options: backend options (``Tuner(backend_options=...)``); empty: its shipped defaults.
        env: environment variables of the study's process (e.g. a development candidate's setting).
        description: one line for the report.
    """

    kind: Literal["model.tune", "model.tune-ray", "hpo"]
    backend: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _backend(self) -> ContenderSpec:
        if (self.kind == "hpo") != bool(self.backend):
            raise ValueError("backend: an hpo contender names its backend, and only an hpo contender has one")
        if self.kind != "hpo" and self.options:
            raise ValueError("options: backend options are for hpo contenders; model.tune runs as users run it")
        return self


class ConditionSpec(_Strict):
    """Which contenders run on which problems, with which fixed train args and space.

    Attributes:
        label: the condition in words (shown in every table).
        baseline: the contender every other is compared with (a ``model.tune`` contender, run first
            on each seed: its wall time is the others' budget).
        contenders: contenders, baseline included.
        problems: problems.
        train_args: fixed train args added to every training of the condition (e.g. ``optimizer: AdamW``).
        space: the space of the hpo contenders, given verbatim as ``Tuner(space=...)`` (``None``:
            hpo's default; a name or a mapping).
        tune_space: the space of the model.tune contenders (``None``: its own 26-key default).
        seeds: a subset of the evaluation seeds (``None``: all of them).
        contender_seeds: per contender, a subset of the condition's seeds it runs on (e.g. an
            expensive secondary contender on half of them); the others run on all.
    """

    label: str
    baseline: str
    contenders: list[str]
    problems: list[str]
    train_args: dict[str, Any] = Field(default_factory=dict)
    space: str | dict[str, Any] | None = None
    tune_space: dict[str, Any] | None = None
    seeds: str | None = None
    contender_seeds: dict[str, str] = Field(default_factory=dict)


class NoiseFloorSpec(_Strict):
    """One configuration trained ``trainings`` times per problem by the final-training function.

    Attributes:
        condition: whose fixed train args it trains under.
        trainings: trainings per problem.
        params: the configuration (``{}``: Ultralytics' defaults, as model.tune's first iteration trains them).
        seed_base: training seeds ``seed_base + 1 ..``.
        init_seed: the protocol seed whose start (shared initialisation) it trains from
            (``None``: the first evaluation seed).
    """

    condition: str
    trainings: int = Field(default=10, ge=2)
    params: dict[str, Any] = Field(default_factory=dict)
    seed_base: int = 900_000
    init_seed: int | None = None


class StatisticsSpec(_Strict):
    """The tests (:mod:`hpo_bench.stats`).

    Attributes:
        primary_condition, primary_contenders: the Holm family is these contenders against the
            condition's baseline on every problem of the condition.
        criterion_better: the registered success criterion, when there is one: every primary
            contender's verdict is ``better`` on at least this many problems (the report says, per
            contender, whether it is met).
        alpha: family-wise level.
        resamples, bootstrap_seed, level: the paired bootstrap interval of each mean difference.
        tie_k: a paired difference within ``tie_k * noise sd * sqrt(2 / final_seeds)`` is a tie.
        detect_delta, power: the seeds needed to detect ``detect_delta`` at ``alpha`` with ``power``.
    """

    primary_condition: str
    primary_contenders: list[str]
    criterion_better: int | None = Field(default=None, ge=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    resamples: int = Field(default=10_000, ge=100)
    bootstrap_seed: int = 0
    level: float = Field(default=0.95, gt=0, lt=1)
    tie_k: float = Field(default=1.0, ge=0)
    detect_delta: float = Field(default=0.02, gt=0)
    power: float = Field(default=0.8, gt=0, lt=1)


class FidelitySpec(_Strict):
    """The fidelity-transfer experiment (:mod:`hpo_bench.fidelity`).

    Attributes:
        condition: whose fixed train args and space.
        factor: the long schedule is ``factor`` x the trial length.
        configs: configurations in all (the defaults, the given incumbents, the rest spread over the space).
        sample_seed: seed of the spread (Latin hypercube).
        seed: the protocol seed whose start the configurations train from; their training seed.
        optimizer: optimizer of the spread configurations (``None``: the condition's).
    """

    condition: str
    factor: int = Field(default=5, ge=2)
    configs: int = Field(default=20, ge=3)
    sample_seed: int = 0
    seed: int | None = None
    optimizer: str | None = None


class SeedsSpec(_Strict):
    evaluation: str
    development: str


class Protocol(_Strict):
    """The whole protocol (see the module docstring and ``benchmarks/protocol.md``)."""

    name: str
    device: str = "cpu"
    seeds: SeedsSpec
    problems: dict[str, ProblemSpec]
    contenders: dict[str, ContenderSpec]
    conditions: dict[str, ConditionSpec]
    noise_floor: NoiseFloorSpec
    statistics: StatisticsSpec
    fidelity: FidelitySpec | None = None

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v: Any) -> str:
        text = str(v).strip().lower()
        if text != "cpu" and not all(d.strip().isdigit() for d in text.split(",")):
            raise ValueError("must be cpu or CUDA device indices as Ultralytics' device= takes them, e.g. '0' or '0,1'")
        return text

    @model_validator(mode="after")
    def _references(self) -> Protocol:
        ev, dev = parse_seed_set(self.seeds.evaluation), parse_seed_set(self.seeds.development)
        both = sorted(set(ev) & set(dev))
        if both:
            raise ValueError(f"seeds: {both} are both evaluation and development seeds; keep the two sets apart")
        for cname, c in self.conditions.items():
            for who in [c.baseline, *c.contenders]:
                if who not in self.contenders:
                    raise ValueError(f"conditions.{cname}: unknown contender '{who}'; known: {', '.join(self.contenders)}")
            if c.baseline not in c.contenders:
                raise ValueError(f"conditions.{cname}.baseline: '{c.baseline}' must be one of its contenders")
            if self.contenders[c.baseline].kind != "model.tune":
                raise ValueError(
                    f"conditions.{cname}.baseline: '{c.baseline}' must be a model.tune contender (its time is the budget)"
                )
            for p in c.problems:
                if p not in self.problems:
                    raise ValueError(f"conditions.{cname}: unknown problem '{p}'; known: {', '.join(self.problems)}")
            if c.seeds is not None and not set(parse_seed_set(c.seeds)) <= set(ev):
                raise ValueError(
                    f"conditions.{cname}.seeds: '{c.seeds}' must be a subset of the evaluation seeds {self.seeds.evaluation}"
                )
            for who, text in c.contender_seeds.items():
                if who not in c.contenders or who == c.baseline:
                    raise ValueError(
                        f"conditions.{cname}.contender_seeds: '{who}' is not a non-baseline contender of the condition"
                    )
                if not set(parse_seed_set(text)) <= set(parse_seed_set(c.seeds) if c.seeds else ev):
                    raise ValueError(
                        f"conditions.{cname}.contender_seeds.{who}: '{text}' must be a subset of the condition's seeds"
                    )
        for ref, cond in (("noise_floor", self.noise_floor.condition), ("statistics", self.statistics.primary_condition)):
            if cond not in self.conditions:
                raise ValueError(f"{ref}: unknown condition '{cond}'; known: {', '.join(self.conditions)}")
        if self.fidelity and self.fidelity.condition not in self.conditions:
            raise ValueError(f"fidelity.condition: unknown '{self.fidelity.condition}'; known: {', '.join(self.conditions)}")
        primary = self.conditions[self.statistics.primary_condition]
        for who in self.statistics.primary_contenders:
            if who not in primary.contenders or who == primary.baseline:
                raise ValueError(
                    f"statistics.primary_contenders: '{who}' is not a non-baseline contender of the primary condition"
                )
        return self

    def evaluation_seeds(self) -> list[int]:
        """The evaluation seeds (the same for every contender)."""
        return parse_seed_set(self.seeds.evaluation)

    def development_seeds(self) -> list[int]:
        """Seeds for pilots and for choosing defaults, never evaluated on."""
        return parse_seed_set(self.seeds.development)

    def condition_seeds(self, condition: str) -> list[int]:
        """The evaluation seeds of ``condition``."""
        c = self.conditions[condition]
        return parse_seed_set(c.seeds) if c.seeds else self.evaluation_seeds()


def noise_seeds(protocol: Protocol) -> list[int]:
    """The training seeds of the noise floor."""
    nf = protocol.noise_floor
    return [nf.seed_base + i for i in range(1, nf.trainings + 1)]


def _one_line(e: ValidationError, path: Path) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or err["type"] == "missing" else f" (got {got!r})"
    more = f" [+{len(e.errors()) - 1} more]" if len(e.errors()) > 1 else ""
    return f"--protocol: {path.name}: {where}: {msg}{shown}{more}"


def load_protocol(path: str | Path) -> tuple[Protocol, str]:
    """Read and validate a protocol file.

    Returns:
        ``(protocol, sha256 of the file's bytes)``.

    Raises:
        ValueError: a missing or unreadable file, YAML that does not parse, or a field that breaks
            the schema: one line naming the field, the value and the rule.
    """
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"--protocol: cannot read '{path}': {e.strerror or e}") from None
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ValueError(f"--protocol: '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"--protocol: '{path}' must hold a mapping (name, seeds, problems, contenders, conditions, ...)")
    try:
        proto = Protocol.model_validate(doc)
    except ValidationError as e:
        raise ValueError(_one_line(e, path)) from None
    return proto, hashlib.sha256(raw).hexdigest()


def recorded_protocol(results: dict[str, Any]) -> Protocol:
    """The protocol a run recorded: ``results.json``'s ``protocol.text``, validated (what that run ran,
    whatever the file says now)."""
    import yaml

    return Protocol.model_validate(yaml.safe_load(results["protocol"]["text"]))
