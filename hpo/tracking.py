"""MLflow tracking: one parent run per study, one nested child run per trial.

:class:`MlflowTracker` is a :class:`~hpo.callbacks.TunerCallback`, contributed to every study by
this module's :func:`hpo_study_observers` (an ``hpo.plugins`` entry point of hpo itself, loaded
like any third-party plugin; the Tuner does not know MLflow). It runs in the driver process
and logs every event the study loop emits, whatever the backend (ultralytics, optuna, ray):
trials that train in forked worker processes or on Ray workers are logged by the driver, which
receives their per-epoch rows. Every call goes through one :class:`mlflow.MlflowClient` with
explicit run ids; MLflow's global "active run" is never used, so trials running in parallel
threads (``workers > 1``) cannot mix up their runs.

What is logged (see ``docs/mlflow.md``):

- parent run (name = study name, tag ``hpo.role=study``): the settings as params (``backend``,
  ``model``, ``data``, ``task``, ``metric``, ``direction``, ``epochs``, ``iterations``,
  ``concurrent_trials``, ``seed``, ``trial_timeout``, ``train_args.<k>``, ``options.<k>``,
  ``space.<k>``), the versions as tags ``hpo.version.<dist>``; at the end the tags
  ``hpo.best_trial`` / ``hpo.best.<param>``, the metric ``best_objective`` and the artifacts
  ``leaderboard.csv``, ``leaderboard.md``, ``best.yaml``, ``study.json``, ``weights/best.pt``.
- child run per trial (tags ``mlflow.parentRunId``, ``hpo.role=trial``, ``hpo.trial_id``,
  ``hpo.backend``, ``hpo.status``): the sampled params, every per-epoch value (training losses,
  validation metrics, learning rates) with ``step`` = epoch (1-based), ``final/<metric>`` of the
  final validation, ``objective``, ``epochs_completed``, ``duration_s``. Run status: complete ->
  FINISHED, pruned -> KILLED (stopped early), failed -> FAILED.

- child run per final run (:mod:`hpo.final`; name ``final-<id>``, tags ``mlflow.parentRunId``,
  ``hpo.role=final``, ``hpo.final_run``, ``hpo.source_trial``, ``hpo.seed``, ``hpo.split``,
  ``hpo.status``): the configuration's params plus ``seed`` and ``epochs``, every per-epoch value,
  ``final.val/<metric>`` (validation of ``best.pt``), ``final.test/<metric>`` (the test split),
  ``objective_val``, ``objective_test`` (on the split; the validation value without a test split,
  tag ``hpo.split`` = ``val (no test split)``). At the end of the stage the parent run gets the
  metrics ``final_test_mean``, ``final_test_sd``, ``final_val_mean`` of the final model's
  configuration, ``final_objective_val`` and ``final_objective_test`` of the final model's run,
  the tags ``hpo.final.*`` and the artifacts ``final.yaml`` and ``weights/final.pt``.

The parent run's ids are kept in ``<study>/mlflow.json`` (:data:`RUN_FILE`, written atomically),
never in ``study.json``; studies made by earlier versions of hpo hold them in ``study.json``'s ``mlflow`` key,
which is still read.

Metric names are Ultralytics' own with parentheses removed (MLflow refuses them), the same
spelling Ultralytics' MLflow callback uses: ``metrics/mAP50-95(B)`` -> ``metrics/mAP50-95B``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .callbacks import TunerCallback
from .errors import ConfigError
from .files import atomic_write_text
from .hookspecs import hookimpl
from .redact import mask_secrets, mask_text
from .report import count_trials

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .config import TuneConfig
    from .result import TuneResult
    from .study import Study, TrialRecord

__all__ = [
    "MlflowTracker",
    "tracker_for",
    "tracker_for_study",
    "default_tracking_uri",
    "metric_key",
    "RUN_FILE",
    "stored_run",
    "hpo_study_observers",
]

#: The file in the study directory that holds the parent run's ids (``tracking_uri``,
#: ``experiment``, ``experiment_id``, ``parent_run_id``), written by the study's writer.
RUN_FILE = "mlflow.json"

#: Short HTTP retries for the tracker (set in the driver only where the user did not set them):
#: with MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) a dead server stalls each
#: call for minutes. With these a dead server costs a few seconds once, then tracking stops.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # MLflow prints "View run ... at: URL" on stdout when a run ends; stdout is for
    # `hpo tune --json`, and hpo prints the parent run's id on stderr itself.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

#: Longest param value MLflow stores (characters); longer values are cut with "...".
MAX_PARAM_LEN = 6000
#: Longest tag value logged (characters).
MAX_TAG_LEN = 5000

_BAD_NAME = re.compile(r"[^/\w.\- :]")


def metric_key(name: str) -> str:
    """MLflow-safe metric/param name: parentheses dropped, other disallowed characters ``_``.

    ``"metrics/mAP50-95(B)"`` -> ``"metrics/mAP50-95B"`` (Ultralytics' own MLflow spelling).
    """
    return _BAD_NAME.sub("_", name.replace("(", "").replace(")", ""))


def default_tracking_uri(study_dir: Path) -> str:
    """Where hpo logs when tracking is on and ``MLFLOW_TRACKING_URI`` is not set.

    ``sqlite:///<study_dir>/mlflow.db``, artifacts in ``<study_dir>/mlartifacts``: the study
    directory stays self-contained (nothing is written to the current directory); browse it with
    ``mlflow ui --backend-store-uri sqlite:///<study_dir>/mlflow.db``.
    """
    return f"sqlite:///{Path(study_dir).absolute() / 'mlflow.db'}"


def _public_uri(uri: str) -> str:
    """``uri`` without a ``user:password@`` part and with secret query values masked
    (:func:`hpo.redact.mask_text`), fit to print and store."""
    try:
        parts = urlsplit(uri)
        if parts.username or parts.password:
            host = parts.hostname or ""
            if parts.port:
                host += f":{parts.port}"
            uri = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    except ValueError:  # a port that is not a number: mask what can be found
        pass
    return mask_text(uri)


def _store_error(uri: str, e: BaseException) -> ConfigError:
    """The one-line refusal of a tracking URI MLflow cannot open (:meth:`MlflowTracker.check`): a file
    store, which MLflow 3 refuses unless ``MLFLOW_ALLOW_FILE_STORE=true``, names both fixes."""
    shown = _public_uri(uri)
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    if "MLFLOW_ALLOW_FILE_STORE=true" in str(e):  # MLflow's own refusal names its opt-out
        folder = Path(urlsplit(uri).path if scheme == "file" else uri).expanduser().absolute()
        return ConfigError(
            f"MLFLOW_TRACKING_URI: '{shown}' is an MLflow file store, which this MLflow refuses unless "
            f"MLFLOW_ALLOW_FILE_STORE=true; use a database store (MLFLOW_TRACKING_URI=sqlite:///{folder.parent / 'mlflow.db'}) "
            "or set MLFLOW_ALLOW_FILE_STORE=true"
        )
    return ConfigError(
        f"MLFLOW_TRACKING_URI: MLflow cannot use '{shown}' ({type(e).__name__}: {_first_line(e)}); "
        "fix MLFLOW_TRACKING_URI or the MLflow variable named, or pass --no-mlflow"
    )


def _cut(text: Any, n: int) -> str:
    s = str(text)
    return s if len(s) <= n else s[: n - 3] + "..."


def _stderr(msg: str) -> None:
    """One ``hpo: mlflow: MSG`` line (the ``hpo`` logger, :mod:`hpo.log`)."""
    logging.getLogger("hpo.mlflow").info(f"mlflow: {mask_text(msg)}")


def tracker_for(config: TuneConfig, *, enabled: bool | None = None, experiment: str | None = None) -> MlflowTracker | None:
    """The tracker a :class:`~hpo.tuner.Tuner` uses, or ``None`` when tracking is off.

    Args:
        config: the validated study settings.
        enabled: ``True`` on, ``False`` off, ``None`` (default) on when the environment variable
            ``MLFLOW_TRACKING_URI`` is set (or when ``experiment`` is given).
        experiment: MLflow experiment name (default: the study name ``config.name``).

    Raises:
        ConfigError: ``experiment`` given with ``enabled=False``, or an empty/too long name.
        hpo.extras.MissingExtra: tracking is on but mlflow is not installed (extra ``mlflow``).
    """
    if experiment is not None:
        experiment = str(experiment).strip()
        if not experiment or len(experiment) > 500:
            raise ConfigError(f"experiment: {experiment!r} must be a non-empty name of at most 500 characters")
        if enabled is False:
            raise ConfigError("experiment: given with --no-mlflow; drop one of them")
    if enabled is None:
        enabled = bool(os.environ.get("MLFLOW_TRACKING_URI")) or experiment is not None
    if not enabled:
        return None
    from .extras import require

    require("mlflow", "mlflow", "MLflow tracking (--mlflow, or MLFLOW_TRACKING_URI set)")
    return MlflowTracker(
        experiment=experiment or config.name,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
        study_dir=config.study_dir,
    )


def tracker_for_study(
    study_dir: str | os.PathLike, *, enabled: bool | None = None, experiment: str | None = None
) -> MlflowTracker | None:
    """The tracker of work on an existing study after its search (``hpo final STUDY``), or ``None``
    when tracking is off; :meth:`MlflowTracker.check` has run. It nests its runs under the study's
    parent run (:meth:`MlflowTracker.attach`).

    Args:
        study_dir: the study directory.
        enabled: as :func:`tracker_for` (``None``: on when ``MLFLOW_TRACKING_URI`` is set or ``experiment`` given).
        experiment: the experiment (default: the one stored in ``mlflow.json``, else the study's name).

    Raises:
        ConfigError, hpo.extras.MissingExtra: as :func:`tracker_for` and :meth:`MlflowTracker.check`.
    """
    if experiment is not None:
        experiment = str(experiment).strip()
        if not experiment or len(experiment) > 500:
            raise ConfigError(f"experiment: {experiment!r} must be a non-empty name of at most 500 characters")
        if enabled is False:
            raise ConfigError("experiment: given with --no-mlflow; drop one of them")
    if enabled is None:
        enabled = bool(os.environ.get("MLFLOW_TRACKING_URI")) or experiment is not None
    if not enabled:
        return None
    from .extras import require

    require("mlflow", "mlflow", "MLflow tracking (--mlflow, or MLFLOW_TRACKING_URI set)")
    path = Path(study_dir)
    tracker = MlflowTracker(
        experiment=experiment or stored_run(path).get("experiment") or path.resolve().name,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
        study_dir=path,
    )
    tracker.check()
    return tracker


@hookimpl
def hpo_study_observers(config: TuneConfig, settings: Mapping[str, Any]) -> list[TunerCallback]:
    """The MLflow tracker of a study about to run (hook :func:`hpo.hookspecs.hpo_study_observers`).

    Builds it with :func:`tracker_for` from ``settings["mlflow"]`` and ``settings["experiment"]``
    and runs its pre-flight :meth:`MlflowTracker.check` (create or get the experiment), before the
    study directory is touched.

    Returns:
        ``[tracker]``, or ``[]`` when tracking is off.

    Raises:
        ConfigError: as :func:`tracker_for` and :meth:`MlflowTracker.check`.
        hpo.extras.MissingExtra: tracking is on but mlflow is not installed (extra ``mlflow``).
    """
    tracker = tracker_for(config, enabled=settings.get("mlflow"), experiment=settings.get("experiment"))
    if tracker is None:
        return []
    tracker.check()
    return [tracker]


def stored_run(study_dir: str | os.PathLike) -> dict[str, Any]:
    """The parent run's ids stored for a study: ``<study>/mlflow.json`` (:data:`RUN_FILE`), else the
    ``mlflow`` key of ``study.json`` (studies made by earlier versions of hpo), else ``{}``. Never raises: an
    unreadable file counts as none."""
    for name, key in ((RUN_FILE, None), ("study.json", "mlflow")):
        try:
            doc = json.loads((Path(study_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and key is not None:
            doc = doc.get(key)
        if isinstance(doc, dict) and doc.get("parent_run_id"):
            return dict(doc)
    return {}


class MlflowTracker(TunerCallback):
    """Logs a study to MLflow: a parent run for the study, a nested child run per trial.

    Made by this module's hook :func:`hpo_study_observers` (what ``Tuner(mlflow=...)`` leads to:
    :func:`tracker_for`, then :meth:`check`), or directly and passed in ``Tuner(callbacks=[...])``;
    then call :meth:`check` yourself before the run to refuse a deleted experiment or an
    unreachable server before anything is written. Credentials come from the environment only
    (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``,
    ``AWS_*`` for S3 artifacts), as the MLflow client reads them; hpo never logs or stores them.

    If a call to the server fails after the study started (server gone, network cut), the tracker
    warns once on stderr, stops tracking and lets the study continue; :attr:`error` holds the
    reason. The study directory is the source of truth either way.

    Args:
        experiment: experiment name (created if missing; an experiment of that name in the
            deleted state is an error).
        tracking_uri: MLflow tracking URI; ``None``: :func:`default_tracking_uri` of the study.
        study_dir: the study directory (for the default URI and its artifacts).

    Attributes:
        uri: the tracking URI in use (credentials stripped when shown or stored).
        experiment_id: set by :meth:`check` / at study start.
        parent_run_id: the study's parent run, set at study start.
        error: why tracking stopped (``None`` while it works).
    """

    #: how :attr:`hpo.Tuner.tracker` finds the tracker among the study's observers
    name = "mlflow"

    def __init__(self, *, experiment: str, tracking_uri: str | None, study_dir: str | os.PathLike):
        self.experiment = experiment
        self.study_dir = Path(study_dir)
        self.local = tracking_uri is None
        self.uri = tracking_uri or default_tracking_uri(self.study_dir)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.error: str | None = None
        self._runs: dict[int, str] = {}
        self._final: dict[int, str] = {}  # final run id -> its MLflow run id
        self._lock = threading.Lock()
        self._client: Any = None
        self._backend = ""
        self._config: TuneConfig | None = None
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)

    # --- plumbing
    @property
    def active(self) -> bool:
        """Whether the tracker still logs (False after a server failure)."""
        return self.error is None and self.parent_run_id is not None

    def client(self) -> Any:
        """The :class:`mlflow.MlflowClient` bound to :attr:`uri` (created once)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _safe(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one logging step; on any error warn once, stop tracking, return ``None``."""
        if self.error is not None:
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - tracking must never break the study
            with self._lock:
                first = self.error is None
                if first:
                    self.error = f"{what}: {type(e).__name__}: {_first_line(e)}"
            if first:
                _stderr(
                    f"warning: tracking stopped ({self.error}); the study continues and its directory "
                    f"{self.study_dir} keeps every trial"
                )
            return None

    # --- before the study opens
    def check(self) -> None:
        """Create or fetch the experiment once, before any trial and before anything is written.

        With the default (local) URI and no database yet, nothing is checked (the database is
        created in the study directory when the study starts).

        Raises:
            ConfigError: the experiment exists in the deleted state; the server cannot be
                reached or refuses the request (message names the URI and the fix); MLflow
                cannot open the URI at all, e.g. a file store (``file:///...`` or a path), which
                MLflow 3 refuses unless ``MLFLOW_ALLOW_FILE_STORE=true`` (the message names that and
                ``sqlite:///...``). The URI's password is never in the message.
        """
        if self.local and not Path(self.uri.removeprefix("sqlite:///")).is_file():
            return
        self._experiment_id(create=not self.local)

    def _experiment_id(self, *, create: bool) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            client = self.client()
        except Exception as e:  # noqa: BLE001 - MLflow refuses the store itself (file store, unknown scheme)
            raise _store_error(self.uri, e) from None
        shown = _public_uri(self.uri)
        try:
            exp = client.get_experiment_by_name(self.experiment)
            if exp is None and create:
                try:
                    artifact = (self.study_dir / "mlartifacts").absolute().as_uri() if self.local else None
                    client.create_experiment(self.experiment, artifact_location=artifact)
                except MlflowException as e:
                    if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                        raise
                exp = client.get_experiment_by_name(self.experiment)  # a parallel creator won: fetch it
        except MlflowException as e:
            raise ConfigError(
                f"mlflow: the tracking server {shown} refused or could not be reached ({_first_line(e)}); "
                "start it, fix MLFLOW_TRACKING_URI, or pass --no-mlflow"
            ) from None
        except Exception as e:  # noqa: BLE001 - connection errors of requests/urllib3
            raise ConfigError(
                f"mlflow: the tracking server {shown} could not be reached ({type(e).__name__}); "
                "start it, fix MLFLOW_TRACKING_URI, or pass --no-mlflow"
            ) from None
        if exp is None:
            return None
        if exp.lifecycle_stage == "deleted":
            raise ConfigError(
                f"experiment: '{self.experiment}' exists in the deleted state on {shown}; restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or choose another --experiment"
            )
        self.experiment_id = exp.experiment_id
        return self.experiment_id

    # --- callbacks
    def on_study_start(self, study: Study, config: TuneConfig) -> None:
        """Create (new study) or re-attach to (resumed study) the parent run; store its ids in
        ``<study>/mlflow.json`` (:data:`RUN_FILE`)."""
        self._backend = config.backend
        self._config = config
        stored = stored_run(study.path)
        if config.join:
            self._safe("start of the study", lambda: self._join_parent(study, stored))
            return

        def start() -> None:
            from mlflow.entities import RunStatus

            client = self.client()
            if self.experiment_id is None:
                self._experiment_id(create=True)
            parent = None
            if stored.get("parent_run_id") and stored.get("tracking_uri") == _public_uri(self.uri):
                try:
                    run = client.get_run(stored["parent_run_id"])
                    if run.info.lifecycle_stage == "active":
                        parent = run
                except Exception:  # noqa: BLE001 - gone from this server: start a new parent
                    parent = None
                if parent is None:
                    _stderr(f"warning: the study's parent run {stored['parent_run_id']} is gone; starting a new one")
            if parent is not None:
                self.parent_run_id = parent.info.run_id
                self.experiment_id = parent.info.experiment_id
                client.update_run(self.parent_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
                self._tag_resume(study)
                self._kill_stale_children()
                action = "re-attached to"
            else:
                run = client.create_run(
                    self.experiment_id,
                    run_name=config.name,
                    tags={
                        "hpo.role": "study",
                        "hpo.study": config.name,
                        "hpo.study_dir": str(study.path),
                        "hpo.backend": config.backend,
                        **{f"hpo.version.{k}": str(v) for k, v in (study.settings.get("versions") or {}).items()},
                    },
                )
                self.parent_run_id = run.info.run_id
                self._log_params(self.parent_run_id, _study_params(config))
                self._log_space(config)
                action = "created"
            doc = {
                "tracking_uri": _public_uri(self.uri),
                "experiment": self.experiment,
                "experiment_id": self.experiment_id,
                "parent_run_id": self.parent_run_id,
            }
            atomic_write_text(study.path / RUN_FILE, json.dumps(doc, indent=2) + "\n")
            _stderr(
                f"{action} parent run {self.parent_run_id} in experiment '{self.experiment}' "
                f"(id {self.experiment_id}) at {_public_uri(self.uri)}"
            )

        self._safe("start of the study", start)

    def _join_parent(self, study: Study, stored: dict[str, Any], wait_s: float = 60.0) -> None:
        """A process joined to a running study (``--join``) nests its trials under the study's
        existing parent run. It never creates a parent, changes the parent's status, ends other
        processes' child runs or writes a file of the study: the study's writer does. The writer
        stores the parent's ids (:data:`RUN_FILE`) right after it creates the study, so a process
        that joins at once waits up to ``wait_s`` seconds for them; without them, this process's
        trials are not tracked (a warning)."""
        deadline = time.monotonic() + wait_s
        while not stored.get("parent_run_id") and time.monotonic() < deadline:
            time.sleep(1.0)
            stored = stored_run(study.path)
        if not stored.get("parent_run_id") or stored.get("tracking_uri") != _public_uri(self.uri):
            self.error = "no parent run to join"
            _stderr(
                "warning: the joined study has no MLflow parent run at this tracking URI (its writer runs "
                "without MLflow, or with another server); this process's trials are not tracked"
            )
            return
        run = self.client().get_run(stored["parent_run_id"])
        self.parent_run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        _stderr(f"joined parent run {self.parent_run_id} in experiment '{self.experiment}' at {_public_uri(self.uri)}")

    def on_trial_start(self, record: TrialRecord) -> None:
        """Create the trial's child run (nested under the parent) and log its sampled params. An
        earlier attempt of the trial left RUNNING (its process killed, a joined process's trial run
        again by another, a lost Ray worker) is ended first (KILLED, ``hpo.status`` interrupted)."""
        if not self.active:
            return

        def start() -> None:
            self._kill_stale_children(record.id)
            run = self.client().create_run(
                self.experiment_id,
                run_name=f"trial-{record.id}",
                tags={
                    "mlflow.parentRunId": self.parent_run_id,
                    "hpo.role": "trial",
                    "hpo.trial_id": str(record.id),
                    "hpo.backend": self._backend,
                    "hpo.status": record.status.value,
                    "hpo.worker": record.worker,
                },
            )
            with self._lock:
                self._runs[record.id] = run.info.run_id
            self._log_params(run.info.run_id, {metric_key(k): v for k, v in record.params.items()})

        self._safe(f"start of trial {record.id}", start)

    def on_epoch(self, record: TrialRecord, row: dict[str, float]) -> None:
        """Log the epoch's values with ``step`` = the epoch (1-based)."""
        run_id = self._runs.get(record.id)
        if not self.active or run_id is None:
            return
        step = int(row.get("epoch", record.epochs_completed))
        self._safe(f"epoch {step} of trial {record.id}", lambda: self._log_metrics(run_id, row, step=step, skip=("epoch",)))

    def on_trial_end(self, record: TrialRecord) -> None:
        """Log the objective, final metrics and status; end the child run."""
        run_id = self._runs.get(record.id)
        if not self.active or run_id is None:
            return

        def end() -> None:
            from mlflow.entities import RunStatus

            client = self.client()
            step = record.epochs_completed
            values: dict[str, Any] = {f"final/{k}": v for k, v in (record.final_metrics or {}).items()}
            if record.objective is not None:
                values["objective"] = record.objective
            values["epochs_completed"] = record.epochs_completed
            if record.duration_s is not None:
                values["duration_s"] = record.duration_s
            self._log_metrics(run_id, values, step=step)
            client.set_tag(run_id, "hpo.status", record.status.value)
            if record.error:
                client.set_tag(run_id, "hpo.error", _cut(mask_text(record.error), MAX_TAG_LEN))
            status = {"complete": RunStatus.FINISHED, "pruned": RunStatus.KILLED}.get(record.status.value, RunStatus.FAILED)
            client.set_terminated(run_id, status=RunStatus.to_string(status))

        self._safe(f"end of trial {record.id}", end)

    def on_study_end(self, study: Study, result: TuneResult | None) -> None:
        """Log the best trial, the leaderboard, best.yaml, study.json and the best weights; end
        the parent run (FINISHED, or FAILED if the run broke or no trial completed). A joined
        process leaves the parent run to the study's writer."""
        if not self.active or (self._config is not None and self._config.join):
            return

        def end() -> None:
            from mlflow.entities import RunStatus

            client = self.client()
            pid = str(self.parent_run_id)
            finished = study.finished()
            best = study.best(finished)
            tags = {f"hpo.count.{s}": str(n) for s, n in count_trials(finished, ("complete", "pruned", "failed")).items()}
            if best is not None:
                tags["hpo.best_trial"] = str(best.id)
                tags.update({f"hpo.best.{metric_key(k)}": _cut(v, MAX_TAG_LEN) for k, v in best.params.items()})
                self._log_metrics(pid, {"best_objective": float(best.objective or 0.0)}, step=len(finished))
            for k, v in tags.items():
                client.set_tag(pid, k, v)
            with tempfile.TemporaryDirectory(prefix="hpo-mlflow-") as tmp:
                tmpdir = Path(tmp)
                _write_leaderboard(finished, study, tmpdir)
                client.log_artifact(pid, str(tmpdir / "leaderboard.csv"))
                client.log_artifact(pid, str(tmpdir / "leaderboard.md"))
            for name in ("best.yaml", "study.json"):
                if (study.path / name).is_file():
                    client.log_artifact(pid, str(study.path / name))
            weights = study.path / "weights" / "best.pt"
            if weights.is_file():
                client.log_artifact(pid, str(weights), artifact_path="weights")
            for plot in sorted((study.path / "plots").glob("*")):  # hpo.plots draws them just before
                if plot.suffix in (".png", ".html", ".json") and not plot.name.startswith("."):  # not a temp file
                    client.log_artifact(pid, str(plot), artifact_path="plots")
            # as Tuner.run: no complete trial, or a final stage without a complete run, is no result
            final = getattr(result, "final", None)
            ok = result is not None and result.counts.get("complete", 0) > 0 and (final is None or bool(final.complete))
            client.set_terminated(pid, status=RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))

        self._safe("end of the study", end)

    # --- the final model (hpo.final)
    def attach(self, study: Study) -> None:
        """Nest what follows under the study's parent run (``hpo final STUDY``): the run stored in
        ``mlflow.json`` when it is at this tracking URI and not deleted (set RUNNING again), else a
        new parent run for the study (its ids stored in ``mlflow.json``). End it with :meth:`finish`."""

        def start() -> None:
            from mlflow.entities import RunStatus

            client = self.client()
            if self.experiment_id is None:
                self._experiment_id(create=True)
            stored = stored_run(study.path)
            parent = None
            if stored.get("parent_run_id") and stored.get("tracking_uri") == _public_uri(self.uri):
                try:
                    run = client.get_run(stored["parent_run_id"])
                    parent = run if run.info.lifecycle_stage == "active" else None
                except Exception:  # noqa: BLE001 - gone from this server: start a new parent
                    parent = None
            if parent is not None:
                self.parent_run_id, self.experiment_id = parent.info.run_id, parent.info.experiment_id
                client.update_run(self.parent_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
                action = "re-attached to"
            else:
                name = study.path.name
                run = client.create_run(
                    self.experiment_id,
                    run_name=name,
                    tags={
                        "hpo.role": "study",
                        "hpo.study": name,
                        "hpo.study_dir": str(study.path),
                        "hpo.backend": str(study.settings.get("backend")),
                    },
                )
                self.parent_run_id = run.info.run_id
                doc = {
                    "tracking_uri": _public_uri(self.uri),
                    "experiment": self.experiment,
                    "experiment_id": self.experiment_id,
                    "parent_run_id": self.parent_run_id,
                }
                atomic_write_text(study.path / RUN_FILE, json.dumps(doc, indent=2) + "\n")
                action = "created"
            self._backend = str(study.settings.get("backend") or "")
            _stderr(f"{action} parent run {self.parent_run_id} in experiment '{self.experiment}' at {_public_uri(self.uri)}")

        self._safe("start of the final stage", start)

    def finish(self, study: Study, *, ok: bool) -> None:
        """End the parent run that :meth:`attach` opened: the study's plots as artifacts, status
        FINISHED (``ok``) or FAILED."""
        if not self.active:
            return

        def end() -> None:
            from mlflow.entities import RunStatus

            client = self.client()
            for plot in sorted((study.path / "plots").glob("*")):
                if plot.suffix in (".png", ".html", ".json") and not plot.name.startswith("."):
                    client.log_artifact(str(self.parent_run_id), str(plot), artifact_path="plots")
            status = RunStatus.FINISHED if ok else RunStatus.FAILED
            client.set_terminated(str(self.parent_run_id), status=RunStatus.to_string(status))

        self._safe("end of the final stage", end)

    def on_final_start(self, record: Any) -> None:
        """Create the final run's child run (nested under the parent) with its params, seed and epochs."""
        if not self.active:
            return

        def start() -> None:
            from .final import split_label

            run = self.client().create_run(
                self.experiment_id,
                run_name=f"final-{record.id}",
                tags={
                    "mlflow.parentRunId": self.parent_run_id,
                    "hpo.role": "final",
                    "hpo.final_run": str(record.id),
                    "hpo.source_trial": str(record.source_trial),
                    "hpo.seed": str(record.seed),
                    "hpo.split": split_label(record.split),
                    "hpo.backend": self._backend,
                    "hpo.status": record.status.value,
                    "hpo.worker": str(record.worker),
                },
            )
            with self._lock:
                self._final[record.id] = run.info.run_id
            params = {metric_key(k): v for k, v in record.params.items()}
            self._log_params(run.info.run_id, {**params, "seed": record.seed, "epochs": record.epochs})

        self._safe(f"start of final run {record.id}", start)

    def on_final_epoch(self, record: Any, row: dict[str, float]) -> None:
        """Log the epoch's values with ``step`` = the epoch (1-based)."""
        run_id = self._final.get(record.id)
        if not self.active or run_id is None:
            return
        step = int(row.get("epoch", record.epochs_completed))
        self._safe(f"epoch {step} of final run {record.id}", lambda: self._log_metrics(run_id, row, step=step, skip=("epoch",)))

    def on_final_end(self, record: Any) -> None:
        """Log the validation and test metrics and the objectives; end the child run (complete:
        FINISHED, interrupted: KILLED, failed: FAILED)."""
        run_id = self._final.get(record.id)
        if not self.active or run_id is None:
            return

        def end() -> None:
            from mlflow.entities import RunStatus

            client = self.client()
            values: dict[str, Any] = {f"final.val/{k}": v for k, v in (record.val_metrics or {}).items()}
            values.update({f"final.test/{k}": v for k, v in (record.test_metrics or {}).items()})
            for key in ("objective_val", "objective_test", "duration_s"):
                if getattr(record, key) is not None:
                    values[key] = getattr(record, key)
            values["epochs_completed"] = record.epochs_completed
            self._log_metrics(run_id, values, step=record.epochs_completed)
            client.set_tag(run_id, "hpo.status", record.status.value)
            if record.error:
                client.set_tag(run_id, "hpo.error", _cut(mask_text(record.error), MAX_TAG_LEN))
            status = {"complete": RunStatus.FINISHED, "interrupted": RunStatus.KILLED}.get(record.status.value, RunStatus.FAILED)
            client.set_terminated(run_id, status=RunStatus.to_string(status))

        self._safe(f"end of final run {record.id}", end)

    def on_final_stage_end(self, result: Any) -> None:
        """On the parent run: the final model's scores (its configuration's mean ± sd on the split,
        its run's values), tags ``hpo.final.*``, and the artifacts ``final.yaml`` and ``weights/final.pt``."""
        if not self.active:
            return

        def end() -> None:
            client = self.client()
            pid = str(self.parent_run_id)
            summary = result.summary
            chosen = summary.get("chosen")
            tags = {"hpo.final.split": str(summary.get("split_label")), "hpo.final.epochs": str(summary.get("epochs"))}
            tags["hpo.final.seeds"] = ",".join(str(x) for x in summary.get("seeds") or [])
            for status, n in (summary.get("counts") or {}).items():
                tags[f"hpo.final.count.{status}"] = str(n)
            values: dict[str, Any] = {}
            if chosen:
                tags.update({"hpo.final.run": str(chosen["run"]), "hpo.final.source_trial": str(chosen.get("source_trial"))})
                values.update(final_objective_val=chosen.get("objective_val"), final_objective_test=chosen.get("objective_test"))
                config = next(
                    (c for c in summary.get("configurations") or [] if chosen["run"] in [r["id"] for r in c.get("runs") or []]),
                    None,
                )
                if config is not None:
                    values.update(final_test_mean=config.get("test_mean"), final_test_sd=config.get("test_sd"))
                    values["final_val_mean"] = config.get("val_mean")
            self._log_metrics(pid, {k: v for k, v in values.items() if v is not None}, step=0)
            for k, v in tags.items():
                client.set_tag(pid, k, v)
            output = Path(str(summary.get("output") or self.study_dir))
            if (output / "final.yaml").is_file():
                client.log_artifact(pid, str(output / "final.yaml"))
            if result.weights is not None and Path(result.weights).is_file():
                client.log_artifact(pid, str(result.weights), artifact_path="weights")

        self._safe("end of the final stage", end)

    # --- helpers
    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _cut(v, MAX_PARAM_LEN)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's limit per batch
            self.client().log_batch(run_id, params=items[i : i + 100])

    def _log_metrics(self, run_id: str, values: dict[str, Any], *, step: int, skip: tuple[str, ...] = ()) -> None:
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(metric_key(k), float(v), now, step)
            for k, v in values.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            self.client().log_batch(run_id, metrics=items[i : i + 1000])

    def _log_space(self, config: TuneConfig) -> None:
        import json

        self.client().log_text(self.parent_run_id, json.dumps(config.space.to_spec(), indent=2, default=str), "space.json")

    def _tag_resume(self, study: Study) -> None:
        """On resume: settings that changed go to new tags ``hpo.resume.<n>.*`` (params stay)."""
        resumes = study.settings.get("resumes") or []
        if not resumes:
            return
        n = len(resumes)
        last = resumes[-1]
        tags = {f"hpo.resume.{n}.at": str(last.get("at"))}
        for k, v in mask_secrets(last.get("changed") or {}).items():
            for key, value in _flatten(k, v).items():
                tags[f"hpo.resume.{n}.{metric_key(key)}"] = _cut(value, MAX_TAG_LEN)
        for k, v in tags.items():
            self.client().set_tag(self.parent_run_id, k, v)

    def _kill_stale_children(self, trial_id: int | None = None) -> None:
        """Child runs left RUNNING by an interrupted run of this study (of trial ``trial_id`` only,
        when given: an earlier attempt of a trial that runs again) are ended as KILLED, tagged
        ``hpo.status`` ``interrupted``."""
        where = f"tags.mlflow.parentRunId = '{self.parent_run_id}' and attributes.status = 'RUNNING'"
        if trial_id is not None:
            where += f" and tags.hpo.trial_id = '{int(trial_id)}'"
        for run in self.client().search_runs([self.experiment_id], filter_string=where):
            self.client().set_tag(run.info.run_id, "hpo.status", "interrupted")
            self.client().set_terminated(run.info.run_id, status="KILLED")


def _first_line(e: BaseException) -> str:
    """The first line of ``e``'s text, credentials masked (MLflow's errors echo the tracking URI)."""
    text = mask_text(str(e).strip())
    return _cut(text.splitlines()[0], 300) if text else type(e).__name__


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


def _study_params(config: TuneConfig) -> dict[str, Any]:
    """The parent run's params: the study settings, one param per scalar, credentials masked
    (:func:`hpo.redact.mask_secrets`)."""
    out: dict[str, Any] = {
        "backend": config.backend,
        "model": config.model,
        "data": config.data.source,
        "task": config.task,
        "metric": config.metric,
        "direction": config.direction,
        "epochs": config.epochs,
        "iterations": config.iterations,
        "concurrent_trials": config.workers,
        "seed": config.seed,
        "trial_timeout": config.trial_timeout,
    }
    out.update(_flatten("train_args", config.train_args) if config.train_args else {})
    out.update(_flatten("options", config.options.model_dump(mode="json")))
    for key, spec in config.space.to_spec().items():
        out[f"space.{key}"] = spec
    return {metric_key(k): v for k, v in mask_secrets(out).items()}


def _write_leaderboard(finished: list[TrialRecord], study: Study, folder: Path) -> None:
    """``leaderboard.csv`` (every column) and ``leaderboard.md``: finished trials, best first."""
    from .report import leaderboard_markdown, trials_frame

    trials_frame(study.ranked(finished)).to_csv(folder / "leaderboard.csv", index=False)
    (folder / "leaderboard.md").write_text(leaderboard_markdown(study, top=None), encoding="utf-8")
