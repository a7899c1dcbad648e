"""Event dispatch to a study's observers: :class:`Observers`.

The events are the methods of :class:`hpo.TunerCallback` (``on_study_start``, ``on_trial_start``,
``on_epoch``, ``on_batch``, ``on_trial_end``, ``on_study_end``); an observer has whichever of them
it wants. An observer that raises never fails the study: the error is one warning line naming the
observer, the event and the error (the ``hpo`` logger, :mod:`hpo.log`; once per observer and
event), and the study goes on. The one exception is a deliberate refusal at the start: a
:class:`hpo.ConfigError` raised by ``on_study_start`` stops the run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError

__all__ = ["Observers", "EVENTS"]

#: The events, in the order a study emits them.
EVENTS = ("on_study_start", "on_trial_start", "on_epoch", "on_batch", "on_trial_end", "on_study_end")

_log = logging.getLogger("hpo.observers")


class Observers:
    """The observers of one run, called in order.

    Args:
        observers: objects with some of :class:`hpo.TunerCallback`'s methods.
    """

    def __init__(self, observers: Iterable[Any] = ()) -> None:
        self.observers = list(observers)
        self._failed: set[tuple[int, str]] = set()
        self._lock = threading.Lock()

    def emit(self, event: str, *args: Any) -> None:
        """Call ``event`` on every observer that has it.

        Raises:
            hpo.ConfigError: an observer refused the study in ``on_study_start``.
        """
        for observer in self.observers:
            method = getattr(observer, event, None)  # an observer need not subclass TunerCallback
            if method is None:
                continue
            try:
                method(*args)
            except ConfigError:
                if event == "on_study_start":
                    raise
                self._report(observer, event)
            except Exception:  # noqa: BLE001 - an observer never fails the study
                self._report(observer, event)

    def _report(self, observer: Any, event: str) -> None:
        import sys

        error = sys.exc_info()[1]
        key = (id(observer), event)
        with self._lock:
            if key in self._failed:
                return
            self._failed.add(key)
        kind = type(observer)
        text = (str(error).strip().splitlines() or [""])[0][:300]
        _log.warning(
            f"observer {kind.__module__}.{kind.__qualname__} failed in {event} ({type(error).__name__}"
            f"{': ' + text if text else ''}); the study goes on"
        )
