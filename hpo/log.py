"""hpo's one diagnostics channel: the standard :mod:`logging` logger ``hpo``.

Library code never prints its warnings itself: it logs them to ``hpo`` or a child logger
(``hpo.study``, ``hpo.tuner``, ``hpo.plots``, ``hpo.mlflow``, a plugin's ``hpo.optuna``, the KFP
step's ``hpo.kfp``...). Valid but risky input to :class:`hpo.Tuner` is also an
:class:`hpo.HpoWarning` (:func:`warnings.warn`), the Python convention for "you called me with
something risky".

Like Optuna's own logger (``optuna.logging``), ``hpo`` has a default handler, installed when hpo
is imported: it writes each record as one line on the current ``sys.stderr``, credentials masked
(:func:`hpo.redact.mask_text`), in the form the ``hpo`` command has always printed::

    hpo: warning: took over the lock of a writer that is gone (host a pid 7, heartbeat 95 s ago)
    hpo: notice: optimizer=auto ignores lr0, which the space tunes: set optimizer=SGD ...
    hpo: fetched yolov8n.pt into runs/hpo/pretrained

(``WARNING`` and above: ``hpo: warning: MESSAGE``; ``INFO``: ``hpo: MESSAGE``, where a notice's
message starts with ``notice:``, see :func:`notice`). The logger does not propagate to the root
logger, so its lines are not printed twice. To route them through your own logging instead::

    import logging
    hpo_logger = logging.getLogger("hpo")
    hpo_logger.removeHandler(hpo.log.DEFAULT_HANDLER)
    hpo_logger.propagate = True
"""

from __future__ import annotations

import logging
import sys

from .redact import mask_text

__all__ = ["LOGGER_NAME", "DEFAULT_HANDLER", "HpoLineFormatter", "notice", "get_logger"]

#: The name of hpo's logger; children are ``hpo.<part>``.
LOGGER_NAME = "hpo"


class HpoLineFormatter(logging.Formatter):
    """``hpo: warning: MESSAGE`` for ``WARNING`` and above, ``hpo: MESSAGE`` below; credentials masked;
    a message of several lines keeps its first."""

    def format(self, record: logging.LogRecord) -> str:
        text = (record.getMessage().strip().splitlines() or [""])[0]
        prefix = "hpo: warning: " if record.levelno >= logging.WARNING else "hpo: "
        return prefix + mask_text(text)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a test's capture, the CLI's
    ``--json`` redirection), not to the stream of the moment it was made."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own rule: a failing handler reports and goes on
            self.handleError(record)


#: The handler the ``hpo`` logger has by default (see the module docstring).
DEFAULT_HANDLER: logging.Handler = _StderrHandler()
DEFAULT_HANDLER.setFormatter(HpoLineFormatter())


def _configure() -> None:
    """Give ``hpo`` its default handler (once per process: this module is imported once)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(DEFAULT_HANDLER)
    logger.setLevel(logging.INFO)
    logger.propagate = False


_configure()


def get_logger(part: str | None = None) -> logging.Logger:
    """The logger ``hpo`` or its child ``hpo.<part>``."""
    return logging.getLogger(LOGGER_NAME if not part else f"{LOGGER_NAME}.{part}")


def notice(logger: logging.Logger, text: str) -> None:
    """Log something hpo changed on the user's behalf (``INFO``, shown as ``hpo: notice: TEXT``)."""
    logger.info("notice: %s", text)
