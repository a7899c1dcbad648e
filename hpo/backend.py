"""The backend interface: what to try next, and when to stop a trial.

The core owns the loop ``ask -> run -> tell`` (:class:`hpo.tuner.StudyLoop`); a backend proposes
(:meth:`Backend.ask`), learns (:meth:`Backend.tell`) and may prune (:meth:`Backend.should_prune`).
The runner trains and the study stores; a backend never touches either directly. A backend whose
library owns its own loop (Ray Tune) overrides :meth:`Backend.run` and drives the study through
the loop's public methods (``run_trial``, ``new_trial_id``, ``remaining``) instead.

Backends declare their options as a pydantic model (:attr:`Backend.Options`); the CLI passes
``--name value`` flags it does not know itself to that model, so a third-party backend gets CLI
options for free.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from .config import TuneConfig
    from .study import Study, TrialRecord
    from .tuner import StudyLoop

__all__ = ["Backend", "BackendOptions"]


class BackendOptions(BaseModel):
    """Base of a backend's options model: unknown options are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Backend(abc.ABC):
    """Base class of every backend.

    Class attributes:
        name: the ``--backend`` value.
        description: one line for ``hpo backends``.
        library: the distribution whose version ``hpo backends`` shows (e.g. ``"optuna"``).
        Options: the pydantic model of the backend's options (``BackendOptions`` subclass).
        supports_join: whether extra processes may join a running study (``--join``): such a
            process opens the study without its lock, writes its records to
            ``trials.<worker>.jsonl``, takes its trial ids from :meth:`next_trial_id`, and retries no
            interrupted trial (those may be another process's live trials). Set it only when the
            backend's own state is shared safely between processes (e.g. Optuna storage).
        uses_trial_runner: whether trials train through the core's runner
            (:meth:`hpo.tuner.StudyLoop.run_trial`, as the default :meth:`run` does). When true, the
            Tuner starts the runner's forkserver while it validates the settings, so its imports
            overlap the driver's (:func:`hpo.runner.start_workers`). Set it false for a backend
            that runs trials its own way (ray).

    Args:
        config: the validated study settings.
        study: the open study (read its records; never append to it).
        options: an instance of :attr:`Options`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    library: ClassVar[str | None] = None
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    supports_join: ClassVar[bool] = False
    uses_trial_runner: ClassVar[bool] = True
    # set by the plugin manager
    plugin: ClassVar[str] = ""
    plugin_version: ClassVar[str] = ""

    def __init__(self, *, config: TuneConfig, study: Study, options: BackendOptions):
        self.config = config
        self.study = study
        self.options = options

    @classmethod
    def check(cls, config: TuneConfig, options: BackendOptions) -> None:
        """Validate settings this backend cannot handle, before anything is written.

        Raises:
            hpo.errors.ConfigError: naming the setting and the fix. Default: accepts everything.
        """

    @abc.abstractmethod
    def ask(self, trial_id: int) -> dict[str, Any]:
        """Propose the params of trial ``trial_id``: ``{key: value}`` for every key of the space."""

    @abc.abstractmethod
    def tell(self, record: TrialRecord) -> None:
        """Learn from a finished trial (``complete``, ``failed`` or ``pruned``)."""

    def should_prune(self, record: TrialRecord, row: dict[str, float]) -> bool:
        """Decide after each epoch whether to stop the trial. Default: never.

        Args:
            record: the running trial (``record.epochs`` already includes ``row``).
            row: this epoch's metrics (``row["epoch"]`` is 1-based; the objective metric is
                ``row[config.metric]`` when the epoch was validated).
        """
        return False

    def next_trial_id(self, loop: StudyLoop) -> int:
        """The id of the next new trial; called by the core loop, under its lock, just before :meth:`ask`.

        Default: the loop's own counter (:meth:`hpo.tuner.StudyLoop.new_trial_id`, ints from 0).
        A backend whose library numbers trials in storage shared by several processes (optuna)
        returns that number instead, so trial ids stay unique across processes joined to one
        study (``--join``). The id must not be in use in the study.
        """
        return loop.new_trial_id()

    def restore(self, finished: list[TrialRecord]) -> None:
        """Rebuild state from a resumed study's finished trials. Default: ``tell`` each in id order."""
        for record in finished:
            self.tell(record)

    def retry_params(self, record: TrialRecord) -> dict[str, Any]:
        """Params to re-run a trial the kill interrupted. Default: the same params."""
        return dict(record.params)

    def run(self, loop: StudyLoop) -> None:
        """Run the study to its total. Default: the core's ask/tell loop."""
        loop.ask_tell(self)

    def close(self) -> None:
        """Release resources at the end of the study (always called)."""

    @classmethod
    def describe_options(cls) -> dict[str, dict[str, Any]]:
        """``{option: {"type": ..., "default": ..., "help": ...}}`` for ``hpo backends``."""
        out = {}
        for name, f in cls.Options.model_fields.items():
            out[name] = {
                "type": getattr(f.annotation, "__name__", str(f.annotation)),
                "default": f.default,
                "help": f.description or "",
            }
        return out
