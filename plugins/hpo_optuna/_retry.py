"""Riding out a database storage that went away mid-study (a restart, a failover).

Imported only when a database storage is opened (it imports Optuna and SQLAlchemy):
:func:`hpo_optuna._storage.open_storage` returns a :class:`RetryingRDBStorage`, and its engine
has SQLAlchemy's ``pool_pre_ping`` on, so the pooled connections a server restart killed are
replaced when they are checked out instead of failing the next call.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from optuna.storages import RDBStorage
from sqlalchemy import event, exc

from hpo import EngineError

from ._storage import STORAGE_WAIT_S, _first_line, display_url

__all__ = ["RetryingRDBStorage", "ConnectionLostError", "connection_lost", "RETRIED_CALLS", "BACKOFF_S", "BACKOFF_MAX_S"]

#: First pause between two tries of a storage call (s); doubled per try up to :data:`BACKOFF_MAX_S`,
#: each pause drawn in [0.5, 1] of it ("equal jitter": many processes do not retry in step).
BACKOFF_S = 0.25
#: Longest pause between two tries of a storage call (s).
BACKOFF_MAX_S = 4.0
#: The storage calls :class:`RetryingRDBStorage` retries: each is one transaction of its own in
#: Optuna's ``RDBStorage`` (the public ``BaseStorage`` methods, and the private ones Optuna's
#: ``_CachedStorage`` calls on it), so a try that failed changed nothing. Not the
#: ``*_without_commit`` helpers, which run inside another call's transaction.
RETRIED_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "_create_new_trial",
    "set_trial_param",
    "_set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_trial",
    "get_all_trials",
    "_get_trials",
    "get_n_trials",
    "get_best_trial",
    "_get_best_trial_id",
    "record_heartbeat",
    "_get_stale_trial_ids",
)
_log = logging.getLogger("hpo.optuna")


class ConnectionLostError(Exception):
    """A lost, refused or reset database connection, raised in place of SQLAlchemy's
    ``OperationalError`` / ``InterfaceError`` by the engine's ``handle_error`` event (not for
    ``pool_pre_ping``'s own ping, which replaces a dead connection itself). It is no
    ``SQLAlchemyError``, so Optuna's handlers let it through unchanged to
    :class:`RetryingRDBStorage` at once: Optuna would otherwise retry a new trial's insert 5 times
    with pauses of up to 2 s before the bound starts, and fall back on a slower query, with a
    warning, for an error that was no query's fault. Its ``__cause__`` is the driver's error."""


def _as_connection_lost(ctx: Any) -> BaseException | None:
    """SQLAlchemy ``handle_error`` listener: a :class:`ConnectionLostError` for a lost connection."""
    if ctx.is_pre_ping:
        return None
    if ctx.is_disconnect or isinstance(ctx.sqlalchemy_exception, (exc.OperationalError, exc.InterfaceError)):
        return ConnectionLostError(_first_line(ctx.original_exception))
    return None


def connection_lost(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a lost, refused or reset database
    connection: :class:`ConnectionLostError`, SQLAlchemy's ``OperationalError`` / ``InterfaceError`` / ``DisconnectionError``,
    a ``DBAPIError`` that invalidated its connection, or a session left pending by one. Optuna
    wraps these in ``StorageInternalError``. An integrity or data error is none of them (a retry
    cannot help)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(
            e, (ConnectionLostError, exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.PendingRollbackError)
        ):
            return True
        if isinstance(e, exc.DBAPIError) and e.connection_invalidated:
            return True
        e = e.__cause__ or e.__context__
    return False


def _cause_line(error: BaseException) -> str:
    """The database driver's first line for a wrapped error (psycopg's "Connection refused" ...)."""
    e: BaseException | None = error
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        orig = getattr(e, "orig", None)
        if isinstance(orig, BaseException):
            return _first_line(orig)
        e = e.__cause__ or e.__context__
    return _first_line(error)


class _Outage:
    """One storage's connection state, shared by the threads of a process: since when it has been
    away, and whether a call waited past the bound (then every later call fails at once)."""

    def __init__(self, url: str, wait_s: float) -> None:
        self.shown = display_url(url)
        self.wait_s = wait_s
        self.lock = threading.Lock()
        self.since: float | None = None
        self.lost = threading.Event()
        self.error: EngineError | None = None

    def failed(self, error: BaseException) -> None:
        with self.lock:
            if self.since is None:
                self.since = time.monotonic()
                _log.warning(
                    f"optuna storage {self.shown} unreachable ({_cause_line(error)}); "
                    f"retrying for up to {self.wait_s:g} s (--storage-wait)"
                )

    def recovered(self) -> None:
        with self.lock:
            if self.since is not None and not self.lost.is_set():
                _log.info(f"optuna storage {self.shown} reachable again after {time.monotonic() - self.since:.1f} s")
                self.since = None

    def give_up(self, error: BaseException) -> EngineError:
        with self.lock:
            if self.error is None:
                self.error = EngineError(
                    f"optuna storage {self.shown} unreachable for {self.wait_s:g} s (--storage-wait): "
                    f"{_cause_line(error)}; the study stopped with every finished trial kept: run the same "
                    "command with --resume once the database is back"
                )
            self.lost.set()
            return self.error


class RetryingRDBStorage(RDBStorage):
    """Optuna's ``RDBStorage`` whose calls ride out a database that went away for a while.

    Each call in :data:`RETRIED_CALLS` that fails on a lost, refused or reset connection
    (:func:`connection_lost`) is tried again after a pause that starts at :data:`BACKOFF_S` s and
    doubles up to :data:`BACKOFF_MAX_S` s, until it succeeds or ``wait_s`` seconds have passed since
    its first failure. Then it raises :class:`hpo.EngineError`, and so does every later call of
    this storage, at once: the study stops (its running trials recorded ``interrupted``) and
    ``--resume`` continues it. A call can outlast the bound by one connection attempt
    (``connect_timeout``, 10 s by default, for a host that does not answer; a refused connection
    fails at once). The first failure of an outage logs one warning line (``hpo: warning:``), the
    recovery one info line.

    A retried call is one of Optuna's transactions: a try that failed was rolled back, except when
    the connection broke during its ``COMMIT`` (then the retry of ``set_trial_state_values`` finds
    the trial finished, which hpo ignores; the retry of ``create_new_trial`` would leave an Optuna
    trial that hpo never ran, which ``--resume`` marks ``FAIL``).

    Args:
        url: the database URL.
        wait_s: the bound in seconds (``--storage-wait``).
        **kwargs: ``RDBStorage``'s own (``engine_kwargs``, ...).

    Raises:
        hpo.EngineError: from a storage call, past the bound.
    """

    def __init__(self, url: str, *, wait_s: float = STORAGE_WAIT_S, **kwargs: Any) -> None:
        self._outage = _Outage(url, wait_s)
        self._local = threading.local()
        super().__init__(url, **kwargs)
        event.listen(self.engine, "handle_error", _as_connection_lost)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_outage", None)
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._outage = _Outage(self.url, STORAGE_WAIT_S)
        self._local = threading.local()
        event.listen(self.engine, "handle_error", _as_connection_lost)

    def _retry(self, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if getattr(self._local, "inside", False):  # a retried call inside another one: the outer one retries
            return call(self, *args, **kwargs)
        outage = self._outage
        self._local.inside = True
        try:
            pause, deadline = BACKOFF_S, None
            while True:
                if outage.lost.is_set() and outage.error is not None:
                    raise outage.error
                try:
                    result = call(self, *args, **kwargs)
                except Exception as e:
                    if not connection_lost(e):
                        raise
                    outage.failed(e)
                    now = time.monotonic()
                    deadline = now + outage.wait_s if deadline is None else deadline
                    if now >= deadline:
                        raise outage.give_up(e) from None
                    self.scoped_session.remove()  # the next try starts a fresh session
                    outage.lost.wait(min(pause * random.uniform(0.5, 1.0), deadline - now))
                    pause = min(2 * pause, BACKOFF_MAX_S)
                    continue
                if deadline is not None:
                    outage.recovered()
                return result
        finally:
            self._local.inside = False


def _retried(name: str) -> Callable[..., Any]:
    call = getattr(RDBStorage, name)

    def method(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retry(call, args, kwargs)

    method.__name__ = name
    method.__qualname__ = f"RetryingRDBStorage.{name}"
    method.__doc__ = call.__doc__
    return method


for _name in RETRIED_CALLS:
    if hasattr(RDBStorage, _name):  # an Optuna without one of them: nothing to wrap
        setattr(RetryingRDBStorage, _name, _retried(_name))


class _NoDeadConnectionTraceback(logging.Filter):
    """Drop SQLAlchemy's pool errors ("Exception during reset or similar", "Exception closing
    connection") whose exception is a lost connection (DB-API 2.0's ``OperationalError`` or
    ``InterfaceError``, by name, or :func:`connection_lost`): with no logging set up, Python prints
    them with their traceback on stderr, while the retry above reports the outage in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        names = {c.__name__ for c in type(error).__mro__}
        return not (names & {"OperationalError", "InterfaceError"} or connection_lost(error))


for _pool in ("QueuePool", "NullPool", "SingletonThreadPool", "StaticPool", "AssertionPool"):
    logging.getLogger(f"sqlalchemy.pool.impl.{_pool}").addFilter(_NoDeadConnectionTraceback())
