"""Connecting to an existing Ray cluster: token authentication and a quick reachability probe.

Ray 2.5x+ clusters started with a token (``ray start --head`` with ``RAY_AUTH_MODE=token``, or
where ``~/.ray/auth_token`` exists, KubeRay with ``authOptions``) accept a client only when the
client runs with ``RAY_AUTH_MODE=token`` and finds the same token; otherwise ``ray.init`` logs
``InvalidAuthToken`` for about 30 s and fails with "Failed to connect". hpo does what a user
would have to do by hand:

- :func:`find_token`: the token from ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``,
  else ``~/.ray/auth_token`` (the places Ray's own token loader reads; in a KFP step or a pod,
  ``RAY_AUTH_TOKEN`` comes from a Kubernetes Secret);
- :func:`prepare`: turns token mode on for this process when a token is found and the user left
  ``RAY_AUTH_MODE`` unset, then probes the cluster's GCS (a TCP connect and one authenticated
  ``GcsClient`` call, 5 s timeouts) so a
  missing or wrong token, or an unreachable address, is one :class:`hpo.ConfigError` line
  within seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

from hpo import ConfigError

__all__ = ["find_token", "prepare", "probe_gcs", "PROBE_TIMEOUT_S"]

#: Seconds the GCS probe waits for an answer.
PROBE_TIMEOUT_S = 5.0
_FIX = (
    "export RAY_AUTH_TOKEN=<token> (on the head: `ray get-auth-token`; in Kubernetes, from the "
    "cluster's token Secret) or put it in ~/.ray/auth_token"
)


def find_token() -> tuple[str | None, str]:
    """The Ray auth token and where it came from, in Ray's own order: env ``RAY_AUTH_TOKEN``,
    the file named by ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``; ``(None, "")`` if none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    for var, path in (
        ("RAY_AUTH_TOKEN_PATH", os.environ.get("RAY_AUTH_TOKEN_PATH")),
        ("", str(Path.home() / ".ray" / "auth_token")),
    ):
        if not path:
            continue
        try:
            token = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if token:
            return token, f"{var}={path}" if var else path
    return None, ""


def _enable_token_mode() -> None:
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config at import: refresh it, as Ray's own setup does
        from ._native import refresh_config

        refresh_config()
    except Exception:  # noqa: BLE001 - older Ray without token auth: the env var is enough
        pass


def _gcs_address(address: str) -> str | None:
    """``host:port`` of a GCS address; ``None`` for ``auto``/``local`` and Ray Client ``ray://`` URLs."""
    if address in ("auto", "local") or "://" in address:
        return None
    host, _, port = address.rpartition(":")
    return address if host and port.isdigit() else None


def probe_gcs(address: str, *, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Check the GCS at ``address`` (``host:port``): a TCP connect, then a Ray ``GcsClient`` (which
    authenticates the way ``ray.init`` will, with this process's auth mode and token).

    Returns:
        ``None`` when the cluster accepted this process; ``"unauthenticated"`` when it refused the
        (missing or wrong) token; ``"unreachable: <detail>"`` when nothing listens within ``timeout`` seconds.
    """
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        return f"unreachable: {e.strerror or type(e).__name__}"
    from ray.exceptions import AuthenticationError

    from ._native import probe_kv

    saved = os.dup(2)  # Ray's C++ client logs its own warning lines to stderr: keep the error to one line
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                probe_kv(address, timeout)
            except AuthenticationError:
                return "unauthenticated"
            except Exception as e:  # noqa: BLE001 - any other answer: ray.init reports it in full
                return None if "uthenticat" not in str(e) else "unauthenticated"
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return None


def prepare(address: str) -> None:
    """Get this process ready to ``ray.init(address=address)``: token mode on when a token is
    found (unless ``RAY_AUTH_MODE`` is set), then the GCS probe for ``host:port`` addresses.

    Raises:
        hpo.ConfigError: the cluster refuses the token (or needs one and none was found), or
            does not answer within :data:`PROBE_TIMEOUT_S` seconds; naming the fix.
    """
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    token, source = find_token()
    if token and not mode:
        _enable_token_mode()
        mode = "token"
    gcs = _gcs_address(address)
    if gcs is None:
        return
    problem = probe_gcs(gcs)
    if problem is None:
        return
    if problem == "unauthenticated":
        if token and mode == "token":
            raise ConfigError(
                f"ray option 'ray_address': the Ray cluster at '{address}' refused the auth token from {source}; "
                f"use that cluster's token: {_FIX}"
            )
        if mode:
            raise ConfigError(
                f"ray option 'ray_address': the Ray cluster at '{address}' requires token authentication but "
                f"RAY_AUTH_MODE is '{mode}'; unset RAY_AUTH_MODE (hpo turns token mode on when it finds a token) "
                "or set it to token"
            )
        raise ConfigError(
            f"ray option 'ray_address': the Ray cluster at '{address}' requires token authentication and "
            f"no token was found; {_FIX}"
        )
    raise ConfigError(
        f"ray option 'ray_address': no Ray cluster answers at '{address}' within {PROBE_TIMEOUT_S:g} s ({problem}); "
        "check --ray-address / RAY_ADDRESS (the head's GCS port, default 6379) and that the head is running"
    )


def _read_probe(path: str, expected: str) -> tuple[str, str]:
    """Run on a Ray node: read the driver's probe file and write an answer beside it."""
    import socket

    host = socket.gethostname()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        return host, f"cannot read {path}: {e.strerror or type(e).__name__}"
    if text != expected:
        return host, f"{path} holds other content than the driver wrote"
    try:
        Path(f"{path}.{host}").write_text(expected, encoding="utf-8")
    except OSError as e:
        return host, f"cannot write beside {path}: {e.strerror or type(e).__name__}"
    return host, ""


def probe_study_dir(study_dir: Path, *, timeout: float = 60.0) -> None:
    """Check that every alive node of the connected Ray cluster can read and write ``study_dir``
    (trials write their Ultralytics run folders and checkpoints there): the driver writes a probe
    file, a zero-CPU task pinned to each node reads it and writes an answer, the driver reads the
    answers back. The probe files are removed.

    Raises:
        hpo.ConfigError: a node cannot see the study directory (it is not on a volume shared by
            every node, e.g. a ReadWriteMany PVC mounted at the same path on head and workers).
    """
    import secrets

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = Path(study_dir) / f".ray-probe-{secrets.token_hex(4)}"
    token = secrets.token_hex(16)
    probe.write_text(token, encoding="utf-8")
    task = ray.remote(num_cpus=0, max_retries=0)(_read_probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(probe), token)
        for n in nodes
    ]
    try:
        answers = ray.get(refs, timeout=timeout)
        bad = [(h, why) for h, why in answers if why]
        if not bad:
            bad = [
                (h, f"its answer {probe}.{h} is not visible to the driver")
                for h, _ in answers
                if not Path(f"{probe}.{h}").is_file()
            ]
    except Exception as e:  # noqa: BLE001 - GetTimeoutError, a node died, ...
        bad = [("?", f"the probe task did not finish within {timeout:g} s ({type(e).__name__})")]
    finally:
        for p in Path(study_dir).glob(f"{probe.name}*"):
            p.unlink(missing_ok=True)
    if bad:
        host, why = bad[0]
        raise ConfigError(
            f"study: the study directory '{study_dir}' is not shared with Ray node {host} ({why}; "
            f"{len(bad)} of {len(nodes)} node(s)); mount the same ReadWriteMany volume at the same path on "
            "the head and every worker (see docs/ray.md)"
        )
