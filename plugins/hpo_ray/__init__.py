"""hpo backend ``ray``: Ray Tune schedulers (ASHA, HyperBand, median stopping) and searchers.

Ray Tune owns its own loop (its controller holds the searcher and the scheduler), so this
backend is an :class:`hpo.Controller`, the visible exception to the core's ``ask -> run -> tell``
loop, not a :class:`hpo.Backend`. The split of roles stays the same:

- Ray decides what to try (its searcher; the first trial of a new study is the space's starting
  configuration, Ultralytics' defaults, unless ``start=random``) and when to stop a trial (its scheduler);
- each trial trains in a Ray worker with the core's trial entry (:func:`hpo.train_trial` on the
  core's :class:`hpo.TrialSpec`, the same code the core's runner forks), reporting per-epoch
  metrics and a checkpoint (the trial's Ultralytics ``last.pt``) to Tune;
- the driver alone writes the study (:class:`hpo_ray._driver.StudyCallback`, a Ray Tune callback
  that reports each trial's start, epochs and end through the core's :class:`hpo.TrialRecorder`),
  so records, ``best.yaml`` and :class:`hpo.TunerCallback` events (progress, MLflow) are the same
  as with any other backend.

Everything is under the study directory: ``<study>/ray/tune-<k>/`` holds Ray's experiment
state and its trial folders (named ``trial_<id>``, the sampled config in ``params.json`` of the
run folder, never in the name), ``<study>/trials/<id>/`` the Ultralytics run folders. See
``docs/ray.md``.

Ray is imported only when a study runs or is checked (not by ``hpo backends``).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Optional

from pydantic import Field

from hpo import BackendOptions, ConfigError, Controller, TrialRecorder, TuneConfig, hookimpl

__all__ = ["RayBackend", "RayOptions", "RayDecisions", "hpo_register_backends"]

SCHEDULERS = ("asha", "hyperband", "median", "fifo")


class RayOptions(BackendOptions):
    """Options of the ray backend (``hpo tune --backend ray --<option> value``)."""

    scheduler: Literal["asha", "hyperband", "median", "fifo"] = Field(
        "asha",
        description="trial scheduler: asha (async successive halving), hyperband, median (median stopping rule) or fifo (none)",
    )
    grace_period: Optional[int] = Field(
        None,
        ge=1,
        description="epochs a trial runs before asha/median may stop it; default 1 (Ray's ASHA default); more than --epochs is refused",
    )
    reduction_factor: float = Field(
        2.0,
        gt=1,
        description="asha/hyperband: keep 1/reduction_factor of the trials at each rung (Ray's default 4; 2 suits small studies)",
    )
    search_alg: str = Field(
        "random",
        description="Ray searcher: random (Ray's BasicVariantGenerator), optuna (OptunaSearch, TPE), or another name of ray.tune.search.create_searcher",
    )
    start: Literal["defaults", "random"] = Field(
        "defaults",
        description="the first trial of a new study: defaults (the space's starting configuration, Ultralytics' defaults, "
        "as the optuna and ultralytics backends start; chosen on development seeds) or random (the searcher's own first proposal)",
    )
    max_concurrent: Optional[int] = Field(
        None,
        ge=1,
        description="trials run at once (default: --concurrent-trials, as on every backend; the cluster's resources cap it too)",
    )
    cpus_per_trial: float = Field(
        1.0, gt=0, description="CPUs Ray reserves per trial (checked against the cluster before any trial)"
    )
    gpus_per_trial: float = Field(
        0.0, ge=0, description="GPUs Ray reserves per trial; Ray assigns the device (device= only as cpu)"
    )
    ray_address: Optional[str] = Field(
        None,
        description="address of an existing Ray cluster (e.g. head:6379, ray://head:10001 or auto); default env RAY_ADDRESS, "
        "else a local Ray; a token-authenticated cluster's token is read from RAY_AUTH_TOKEN or ~/.ray/auth_token",
    )
    num_cpus: Optional[int] = Field(
        None, ge=1, description="CPUs of the local Ray started when no address is given (default: all)"
    )
    checkpoint: bool = Field(
        True,
        description="report each epoch's Ultralytics last.pt to Tune, so interrupted, errored or paused trials continue from their last epoch",
    )
    max_failures: int = Field(
        0, ge=0, description="times Ray retries an errored trial from its last checkpoint (0: an error makes the trial failed)"
    )
    experiment_trials: int = Field(
        250,
        ge=1,
        description="trials per Ray experiment (ray/tune-1, tune-2, ...): Ray Tune's controller keeps and scans every trial "
        "of its experiment, so the driver's cost per trial grows with it; the study runs in experiments of at most this many",
    )
    state_period_s: float = Field(
        2.0, gt=0, description="seconds between saves of Ray's experiment state on the volume (Ray's TUNE_GLOBAL_CHECKPOINT_S)"
    )

    def address(self) -> str | None:
        """The Ray cluster to connect to: ``ray_address``, else env ``RAY_ADDRESS``, else ``None`` (local)."""
        return self.ray_address or os.environ.get("RAY_ADDRESS") or None

    def check(self, config: TuneConfig) -> None:
        """Refuse what Ray cannot run, before anything is written: a grace period longer than the
        epochs, a ``device=`` in the train args that names a GPU (Ray assigns them; ``cpu`` or ``""`` are
        accepted, ``cpu`` not with ``gpus_per_trial``), an unknown searcher, and CPUs/GPUs per trial that no node of the Ray cluster has (this connects to the
        cluster, or starts the local one, which :meth:`run` then uses).

        Raises:
            hpo.errors.ConfigError: naming the option and the fix.
        """
        from . import _driver

        options = self
        if options.grace_period is not None and options.grace_period > config.epochs:
            raise ConfigError(
                f"ray option 'grace_period': {options.grace_period} is more than --epochs {config.epochs}; "
                f"a trial cannot run {options.grace_period} epoch{'s' if options.grace_period != 1 else ''}: pass --grace-period <= {config.epochs} or more --epochs"
            )
        if options.grace_period is not None and options.scheduler in ("hyperband", "fifo"):
            raise ConfigError(
                f"ray option 'grace_period': the {options.scheduler} scheduler has no grace period; "
                "drop --grace-period or use --scheduler asha or median"
            )
        if options.scheduler == "hyperband" and not options.checkpoint:
            raise ConfigError(
                "ray option 'checkpoint': the hyperband scheduler pauses and later continues trials, which needs "
                "checkpoints: drop --checkpoint false or use --scheduler asha"
            )
        device = config.train_args.get("device")
        no_gpu = device is None or str(device).strip().lower() in ("", "cpu")  # Ultralytics' spellings of "no GPU"
        if not no_gpu:
            raise ConfigError(
                f"train args: device={device}: Ray assigns each trial its GPUs; remove device=... and "
                "pass --gpus-per-trial N to train on GPUs (device=cpu is accepted)"
            )
        if device is not None and str(device).strip() and options.gpus_per_trial > 0:
            raise ConfigError(
                f"train args: device={device} trains on the CPU while --gpus-per-trial {options.gpus_per_trial:g} reserves "
                "GPUs for each trial; drop device=cpu to train on them, or drop --gpus-per-trial"
            )
        _driver.check_search_alg(options.search_alg)
        _driver.check_resources(options)


class RayBackend(Controller):
    """Ray Tune: its schedulers stop trials early, its searchers propose, on a local or existing Ray cluster.

    A :class:`hpo.Controller`: :meth:`run` runs a ``ray.tune.Tuner`` (or restores one on
    ``--resume``), Ray's searcher and scheduler decide, and every trial is recorded through the
    core's :class:`hpo.TrialRecorder`.
    """

    name = "ray"
    description = "Ray Tune: ASHA/HyperBand/median schedulers, random/optuna/... searchers, local or existing Ray cluster"
    library = "ray"
    Options = RayOptions

    def run(self, recorder: TrialRecorder) -> None:
        """Run the study to its total with Ray Tune (restoring the experiment on ``--resume``)."""
        from . import _driver

        _driver.run_study(self, recorder)

    def close(self) -> None:
        """Shut down the local Ray this backend started (a remote cluster is only disconnected)."""
        from . import _driver

        _driver.shutdown()


def __getattr__(name: str) -> Any:
    """``RayDecisions`` (:mod:`hpo_ray._decisions`), imported on first use: it imports Ray."""
    if name == "RayDecisions":
        from ._decisions import RayDecisions

        return RayDecisions
    raise AttributeError(f"module 'hpo_ray' has no attribute '{name}'")


@hookimpl
def hpo_register_backends() -> list[type[Controller]]:
    """Register the ray backend."""
    return [RayBackend]
