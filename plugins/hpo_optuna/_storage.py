"""Opening the Optuna storage: a journal file, or a database URL as users write it.

``postgresql://`` URLs load SQLAlchemy's default PostgreSQL driver, psycopg 3 (``psycopg``), which
Optuna does not install: hpo's ``postgres`` extra does (``pip install 'hpo-yolo[postgres]'``). A
storage that cannot be opened (driver missing, server unreachable, bad credentials, unknown
database) is one :class:`hpo.ConfigError` line, raised by :func:`check_storage` from the
backend's ``check``, before the study directory is created.

A database that goes away mid-study (a restart, a failover) is ridden out: every storage call
hpo makes goes through :class:`~hpo_optuna._retry.RetryingRDBStorage`, which retries a call that failed on a lost
or refused connection with exponential backoff for up to ``--storage-wait`` seconds (default
:data:`STORAGE_WAIT_S`), and SQLAlchemy's ``pool_pre_ping`` replaces the pooled connections a
restart killed before they are used. Past the bound the call raises :class:`hpo.EngineError`
(one line naming the storage, password masked; exit 1; ``--resume`` continues the study).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpo import ConfigError

__all__ = ["open_storage", "check_storage", "display_url", "DRIVER_PACKAGES", "STORAGE_WAIT_S"]

#: SQLAlchemy DBAPI driver name -> what to install for it.
DRIVER_PACKAGES = {
    "psycopg": "pip install 'hpo-yolo[postgres]' (psycopg 3, SQLAlchemy's driver for postgresql://)",
    "psycopg2": "pip install psycopg2-binary, or write postgresql://... and pip install 'hpo-yolo[postgres]'",
    "pymysql": "pip install PyMySQL",
    "mysqldb": "pip install mysqlclient",
    "oracledb": "pip install oracledb",
    "pyodbc": "pip install pyodbc",
}
#: Seconds a PostgreSQL connection attempt may take (libpq's connect_timeout) unless the URL sets it.
CONNECT_TIMEOUT_S = 10
#: Default of ``--storage-wait``: seconds a storage call keeps retrying while the database is
#: unreachable. Managed PostgreSQL fails over in about 60-120 s (AWS RDS Multi-AZ: "typically 60-120
#: seconds"; Google Cloud SQL HA: "about 60 seconds"), a maintenance restart in seconds.
STORAGE_WAIT_S = 120.0


def display_url(url: str) -> str:
    """``url`` with its password (and any token in its query) masked as ``***``, for messages and
    ``study.json``; a journal path unchanged (:func:`hpo.redact.mask_text`, SQLAlchemy's form)."""
    from hpo import mask_text

    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return mask_text(make_url(url).render_as_string(hide_password=True))
    except Exception:  # noqa: BLE001 - SQLAlchemy cannot parse it: mask what the patterns find
        return mask_text(url)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


def _engine_kwargs(url: Any) -> dict[str, Any]:
    """SQLAlchemy engine options: ``pool_pre_ping`` (a pooled connection a server restart killed is
    replaced when it is checked out, not failed on), and libpq's ``connect_timeout``."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def open_storage(url: str, *, wait_s: float = STORAGE_WAIT_S) -> Any:
    """The Optuna storage of ``url``: a :class:`~hpo_optuna._retry.RetryingRDBStorage` for a database URL (retrying
    for up to ``wait_s`` seconds while the database is unreachable), ``JournalStorage`` over a
    ``JournalFileBackend`` for a file path (its folder created).

    Raises:
        hpo.ConfigError: the database driver is not installed (naming what to install), or the
            URL cannot be parsed or the database reached (the driver's first line, password masked).
    """
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = display_url(url)
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise ConfigError(f"optuna option 'storage': '{shown}' is not a usable database URL ({_first_line(e)})") from None
    try:
        dialect.import_dbapi()
    except ImportError:
        fix = DRIVER_PACKAGES.get(dialect.driver, f"install the Python package of the '{dialect.driver}' driver")
        raise ConfigError(
            f"optuna option 'storage': {parsed.drivername}:// needs the database driver '{dialect.driver}', "
            f"which is not installed: {fix}"
        ) from None
    try:
        from ._retry import RetryingRDBStorage

        return RetryingRDBStorage(url, wait_s=wait_s, engine_kwargs=_engine_kwargs(parsed))
    except (SQLAlchemyError, ImportError, OSError, ValueError, RuntimeError) as e:
        msg = _first_line(getattr(e, "orig", None) or e)
        raise ConfigError(
            f"optuna option 'storage': cannot open {shown}: {msg}; check the server, database and user "
            "(a password belongs in PGPASSWORD or ~/.pgpass, not in the URL)"
        ) from None


def check_storage(url: str) -> None:
    """Open a database storage once (creating Optuna's tables if the database is empty), so a
    storage that cannot be opened is refused before anything is written. A journal file path and
    SQLite only get their folder checked (opening them would create the file).

    Raises:
        hpo.ConfigError: see :func:`open_storage`; or the folder of a journal / SQLite file does not exist.
    """
    if url.startswith("sqlite"):
        path = url.partition(":///")[2]
        if path and path != ":memory:" and not Path(path).parent.is_dir():
            raise ConfigError(f"optuna option 'storage': the folder of {url} does not exist; create it or fix the path")
        return
    if "://" not in url:
        return  # a journal path: its folder is created with the study
    storage = open_storage(url)
    try:
        storage.remove_session()
        storage.engine.dispose()
    except Exception:  # noqa: BLE001 - closing the check's connections is best effort
        pass
