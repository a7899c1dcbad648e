"""Masking credentials before anything is written or shown: ``postgresql://user:***@host/db``.

A storage URL (Optuna's ``--storage``), an MLflow tracking URI or any other setting may carry a
password (``scheme://user:PASSWORD@host``), a token in its query (``?token=...``,
``&X-Amz-Signature=...``) or a libpq-style ``password=...``. hpo keeps the real value in memory
only, where the connection needs it, and writes or prints the masked form everywhere else:
``study.json`` (:meth:`hpo.study.Study.save_settings`), trial errors (:meth:`hpo.study.Study.append`),
MLflow params and tags (:mod:`hpo.tracking`), every :class:`hpo.errors.HpoError` message, the
CLI's error and warning lines and ``hpo show``.

The masked form is the one SQLAlchemy's ``URL.render_as_string(hide_password=True)`` writes:
the user name and the host stay, the password becomes ``***``. Masking is idempotent, so a
resumed or joined study compares the stored (masked) settings with the masked form of the given
ones: the same URL with another password (a rotated password) is the same setting.

The rules, applied to every string (:func:`mask_text`) and, for mappings, to every value
(:func:`mask_secrets`):

- ``scheme://user:PASSWORD@host``: the userinfo's password, up to the last ``@`` that a host
  follows, so an unencoded ``@`` or ``/`` in it (which :func:`urllib.parse.urlsplit`, and so
  requests and MLflow, and SQLAlchemy read differently) never leaves a part of it; a password
  with an unencoded ``?`` or ``#`` is no valid URL;
- query parameters whose name ends in password, passwd, pwd, secret, token, key (``api_key``,
  ``access_key``), signature, sig or credential(s): their values;
- ``password=VALUE`` / ``passwd=`` / ``pwd=`` (libpq connection strings): the value;
- a mapping's value whose key ends in one of those words (``token``, ``api_key``,
  ``db_password``): the whole value, when it is a non-empty string.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "mask_text", "mask_secrets", "has_secret", "secret_key"]

#: What a secret is replaced with (SQLAlchemy's ``hide_password`` form).
MASK = "***"

_SECRET_WORD = r"(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key|signature|sig|credentials?)"

# scheme://user:PASSWORD@host: the password runs to the last '@' that a host follows (a host, an
# optional port, then '/', '?', '#', a quote, whitespace or the end), so a password holding '@' or
# '/' unencoded (SQLAlchemy and urllib read those differently) is masked whole either way
_URL = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#]*:)(?P<pw>[^\s?#]*)@(?=[^@/\s?#'\"]*(?:[/?#\s'\"]|$))")
# ?token=VALUE, &X-Amz-Signature=VALUE, ;password=VALUE
_QUERY = re.compile(r"(?P<pre>[?&;][A-Za-z0-9_.\-]*?" + _SECRET_WORD + r"=)(?P<pw>[^&#\s'\"]*)", re.I)
# libpq's key=value form: the password key, its value quoted or not
_KEYVALUE = re.compile(r"(?P<pre>(?<![\w\-])(?:password|passwd|pwd)\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s'\"&;,)]+)", re.I)
# a mapping key that names a secret: token, api_key, db_password, ...; not secret_name, max_tokens
_KEY = re.compile(r"^(?:.*[_\-.])?" + _SECRET_WORD + r"$", re.I)


def _masked(m: re.Match[str]) -> str:
    return m.group("pre") + MASK + m.group(0)[m.end("pw") - m.start(0) :]


def mask_text(text: str) -> str:
    """``text`` with every password, token and secret query value in it replaced by ``***``.

    Works on a bare URL and on a whole message that quotes one (an exception from a database
    driver or MLflow that echoes the URL). Idempotent.

    Example:
        >>> mask_text("cannot open postgresql://hpo:PASSWORD@db:5432/optuna")
        'cannot open postgresql://hpo:***@db:5432/optuna'
    """
    if not text or not isinstance(text, str):
        return text
    if "://" in text:
        text = _URL.sub(_masked, text)
    if "=" in text:
        text = _QUERY.sub(_masked, text)
        text = _KEYVALUE.sub(_masked, text)
    return text


def secret_key(key: Any) -> bool:
    """Whether a mapping key names a secret (``token``, ``api_key``, ``db_password``; not
    ``secret_name`` or ``max_tokens``)."""
    return isinstance(key, str) and bool(_KEY.match(key))


def mask_secrets(value: Any) -> Any:
    """A copy of ``value`` (JSON-like: dicts, lists, tuples, strings, numbers) with every secret
    masked: strings by :func:`mask_text`, the string value of a key that names a secret
    (:func:`secret_key`) as a whole. Other values are returned as they are."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: (MASK if secret_key(k) and isinstance(v, str) and v else mask_secrets(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_secrets(v) for v in value)
    return value


def has_secret(value: Any) -> bool:
    """Whether :func:`mask_secrets` would change ``value`` (it holds a password, token or secret)."""
    return mask_secrets(value) != value
