"""The one place this plugin touches Ray's private API (``ray._raylet``, Ray 2.60).

Ray has no public call to check a cluster's token authentication before ``ray.init`` (which
blocks and retries for a minute on a refused token), nor to re-read its auth settings after the
environment changed, so the cluster probe (:mod:`hpo_ray._cluster`) uses:

- ``ray._raylet.Config.initialize("")``: re-read Ray's config (``RAY_AUTH_MODE``) cached at import;
- ``ray._raylet.GcsClient(address=...).internal_kv_get(...)``: one authenticated call to the GCS.

A change of these in a new Ray release breaks here and only here (``tests/test_scale_ray.py`` runs
them against a real token-authenticated Ray head).
"""

from __future__ import annotations

__all__ = ["refresh_config", "probe_kv"]


def refresh_config() -> None:
    """Make Ray re-read its config from the environment (``ray._raylet.Config.initialize``).

    Raises:
        ImportError, AttributeError: an older Ray without it.
    """
    from ray._raylet import Config  # type: ignore[attr-defined]  # a compiled module without stubs

    Config.initialize("")


def probe_kv(address: str, timeout: float) -> None:
    """One authenticated read of the GCS at ``address`` (``host:port``) with this process's auth settings.

    Raises:
        ray.exceptions.AuthenticationError: the cluster refused this process's token.
        Exception: any other failure of the call.
    """
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    GcsClient(address=address).internal_kv_get(b"hpo-probe", b"hpo", timeout=timeout)
