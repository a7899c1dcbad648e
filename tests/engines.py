"""Real scale-out engines for the tests: a throwaway PostgreSQL 15 server and a Ray head with token
auth; and the ``hpo tune`` processes the engine tests run beside them (:func:`tune_argv`,
:func:`start_hpo`, :func:`wait_until`, :func:`kill_groups`, :func:`record_lines`).

Both run as separate processes on 127.0.0.1, on a free port, with their state in their own
temporary directory, and are stopped by pid at the end (``pg_ctl stop`` reads the postmaster's
pid file; the Ray head's processes are the ones whose command line holds its temp dir). Nothing
machine-wide is touched: never ``ray stop``, never the system's PostgreSQL cluster.

PostgreSQL: Debian's ``postgresql-15`` package (``/usr/lib/postgresql/15/bin``), run as the
``postgres`` user when the tests run as root (PostgreSQL refuses to run as root), trust
authentication on the loopback address only.
"""

from __future__ import annotations

import glob
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PostgresServer",
    "RayHead",
    "RayNode",
    "free_port",
    "kill_groups",
    "pg_bin",
    "record_lines",
    "start_hpo",
    "tune_argv",
    "wait_until",
]

_PG_GLOBS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/*/bin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tune_argv(*, train: Mapping[str, Any] | None = None, **settings: Any) -> list[str]:
    """``hpo tune``'s arguments from keyword settings, in the CLI's spelling: ``iterations=3`` ->
    ``--iterations 3``, ``concurrent_trials=2`` -> ``--concurrent-trials 2``, ``quiet=True`` ->
    ``--quiet``, ``mlflow=False`` -> ``--no-mlflow``, a dict or list (a space) as JSON, ``None``
    left out; ``train`` as the trailing ``key=value`` train args."""
    import json

    argv = ["tune"]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + key.replace("_", "-"))
        else:
            argv += [flag, json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return argv + [f"{k}={v}" for k, v in (train or {}).items()]


def start_hpo(argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m hpo.cli ARGV`` in a session of its own (a pod: the driver and its trial workers,
    killed together by :func:`kill_groups`), output captured; ``env`` added to this environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def wait_until(
    cond: Callable[[], Any], procs: Sequence[subprocess.Popen[str]], what: str, timeout: float = 120, poll: float = 0.1
) -> None:
    """Wait until ``cond()`` holds; fail the test (with the process's output) when one of ``procs``
    ends first or ``timeout`` seconds pass."""
    deadline = time.time() + timeout
    while not cond():
        for p in procs:
            assert p.poll() is None, f"a process ended while waiting for {what}: {p.communicate()}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def kill_groups(procs: Sequence[subprocess.Popen[str]]) -> None:
    """SIGKILL each still-running process's session (its trial workers too) and reap it."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def record_lines(path: Path) -> list[dict[str, Any]]:
    """The snapshots of a records file as written, in order (``[]`` while it does not exist)."""
    import json

    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def pg_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (not on PATH in Debian's package).

    Raises:
        FileNotFoundError: no PostgreSQL server is installed (``apt-get install postgresql-15``).
    """
    for pattern in _PG_GLOBS:
        for d in sorted(glob.glob(pattern), reverse=True):
            if Path(d, "initdb").is_file() and Path(d, "pg_ctl").is_file():
                return Path(d)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise FileNotFoundError("no PostgreSQL server (initdb, pg_ctl) found; install Debian's postgresql-15 package")


class PostgresServer:
    """A PostgreSQL server of its own: ``initdb`` in a temp dir, ``pg_ctl start`` on 127.0.0.1:``port``.

    Use :meth:`database` for a fresh, empty database per test; :attr:`url` is the maintenance
    database ``postgres``.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.bin = pg_bin()
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count()

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        full = ["runuser", "-u", "postgres", "--", *cmd] if self._as_postgres else list(cmd)
        return subprocess.run(full, capture_output=True, text=True, timeout=120, cwd=self.root)

    def start(self) -> PostgresServer:
        """Create the cluster and start the server; wait until it accepts connections.

        Raises:
            RuntimeError: initdb or pg_ctl failed (their output in the message).
        """
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        res = self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        if res.returncode:
            raise RuntimeError(f"initdb failed: {res.stdout[-1000:]} {res.stderr[-2000:]}")
        self.resume()
        return self

    def _options(self) -> list[str]:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} -c fsync=off"
        return ["-w", "-t", "60", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", opts]

    def _pg_ctl(self, action: str, *extra: str) -> None:
        res = self._run(str(self.bin / "pg_ctl"), action, *extra, *self._options())
        if res.returncode:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").is_file() else ""
            raise RuntimeError(f"pg_ctl {action} failed: {res.stderr[-1000:]} {log[-2000:]}")

    def resume(self) -> None:
        """``pg_ctl start -w`` of the existing cluster (after :meth:`pause`), on the same port.

        Raises:
            RuntimeError: pg_ctl failed (its output and the server log's tail in the message).
        """
        self._pg_ctl("start")

    def pause(self) -> None:
        """``pg_ctl stop -m fast``: the server terminates every session and stops (a maintenance
        stop, or the old primary of a failover); :meth:`resume` starts it again."""
        res = self._run(str(self.bin / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data))
        if res.returncode:
            raise RuntimeError(f"pg_ctl stop failed: {res.stderr[-1000:]}")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is terminated, and the server accepts
        connections again on the same port when it returns (a maintenance restart, a failover)."""
        self._pg_ctl("restart", "-m", "fast")

    @property
    def pid(self) -> int:
        """The postmaster's pid (first line of ``postmaster.pid``)."""
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self, prefix: str = "t") -> str:
        """Create a new empty database; returns its ``postgresql://`` URL (as users write it)."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (the postmaster by its pid file), then remove the temp dir."""
        if (self.data / "postmaster.pid").is_file():
            self._run(str(self.bin / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data))
        shutil.rmtree(self.root, ignore_errors=True)


class RayHead:
    """A Ray head started with ``ray start --head`` with token authentication on
    (``RAY_AUTH_MODE=token``, its own token in :attr:`token_file` under its temp dir), as a separate
    process tree whose command lines all hold :attr:`temp_dir`.

    Args:
        num_cpus: CPUs the head offers (``--num-cpus``).
    """

    def __init__(self, num_cpus: int = 2, port: int | None = None) -> None:
        # Ray's socket paths must stay short (AF_UNIX limit of 107 bytes): a short temp dir
        self.temp_dir = Path(tempfile.mkdtemp(prefix="hr-", dir="/tmp"))
        self.port = port or free_port()
        self.num_cpus = num_cpus
        self.token = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RayHead:
        """Run ``ray start --head`` and return when it has started.

        Raises:
            RuntimeError: ``ray start`` failed (its output in the message).
        """
        ray = Path(sys.executable).with_name("ray")
        exe = str(ray) if ray.is_file() else (shutil.which("ray") or "ray")
        # token authentication on, with a token of its own (never ~/.ray/auth_token of this machine);
        # a head restarted on the same port (a test of a lost head) keeps its token
        self.token = self.token or secrets.token_hex(32)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.token_file = self.temp_dir / "auth_token"
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file))
        res = subprocess.run(
            [
                exe,
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--temp-dir",
                str(self.temp_dir),
                "--num-cpus",
                str(self.num_cpus),
                "--num-gpus",
                "0",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        if res.returncode:
            self.stop()
            raise RuntimeError(f"ray start failed: {res.stdout[-2000:]} {res.stderr[-2000:]}")
        return self

    def pids(self) -> list[int]:
        """Pids of the processes whose command line holds this head's temp dir."""
        me, out = os.getpid(), []
        needle = str(self.temp_dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                if needle in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
        return out

    def kill(self) -> list[int]:
        """SIGKILL every process of this head at once (a lost head pod); its temp dir stays.

        Returns:
            the pids killed.
        """
        return _kill_all(self.pids(), (signal.SIGKILL,))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s, every process of this head (by pid); remove its temp dir."""
        _kill_all(self.pids(), (signal.SIGTERM, signal.SIGKILL), refresh=self.pids)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class RayNode:
    """A Ray worker node joined to ``head`` with ``ray start --address ... --block`` (its own temp
    dir, ``num_cpus`` CPUs and the custom resource ``{"node_<tag>": 1000}``), as a separate session
    whose processes are the ``ray start`` process, its descendants (raylet, the trial actors) and
    anything whose command line holds :attr:`temp_dir`.

    Args:
        head: the running :class:`RayHead` (its address and token).
        num_cpus: CPUs the node offers.
        tag: names the node's custom resource.
    """

    def __init__(self, head: RayHead, num_cpus: int = 2, tag: str = "w") -> None:
        self.head, self.num_cpus, self.tag = head, num_cpus, tag
        self.temp_dir = Path(tempfile.mkdtemp(prefix=f"rn{tag}-", dir="/tmp"))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> RayNode:
        """Start the node and return once the head lists it alive.

        Raises:
            RuntimeError: ``ray start`` exited, or the node did not join within ``timeout`` seconds.
        """
        ray = Path(sys.executable).with_name("ray")
        exe = str(ray) if ray.is_file() else (shutil.which("ray") or "ray")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.head.token_file))
        log = open(self.temp_dir / "ray-start.log", "w")
        self.proc = subprocess.Popen(
            [
                exe,
                "start",
                "--address",
                self.head.address,
                "--node-ip-address",
                "127.0.0.1",
                "--temp-dir",
                str(self.temp_dir),
                "--num-cpus",
                str(self.num_cpus),
                "--num-gpus",
                "0",
                "--resources",
                f'{{"node_{self.tag}": 1000}}',
                "--disable-usage-stats",
                "--block",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start --address failed: {(self.temp_dir / 'ray-start.log').read_text()[-2000:]}")
            if "Ray runtime started" in (self.temp_dir / "ray-start.log").read_text():
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the Ray node did not start within {timeout:g} s")

    def pids(self) -> list[int]:
        """The node's processes: ``ray start`` and its descendants, and those whose command line holds its temp dir."""
        if self.proc is None:
            return []
        children: dict[int, list[int]] = {}
        needle, held = str(self.temp_dir).encode(), set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if needle in (entry / "cmdline").read_bytes():
                    held.add(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
        out, todo = set(), [self.proc.pid]
        while todo:
            pid = todo.pop()
            if pid not in out:
                out.add(pid)
                todo += children.get(pid, [])
        return sorted((out | held) - {os.getpid()})

    def kill(self) -> list[int]:
        """SIGKILL every process of the node at once (a preempted node); returns the pids."""
        return _kill_all(self.pids(), (signal.SIGKILL,))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, every process of the node (by pid); remove its temp dir."""
        _kill_all(self.pids(), (signal.SIGTERM, signal.SIGKILL), refresh=self.pids)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _kill_all(pids: list[int], signals: tuple[int, ...], refresh=None) -> list[int]:
    """Send each of ``signals`` in turn to ``pids`` (re-listed by ``refresh`` before each), waiting
    up to 10 s for them to go after each."""
    killed: list[int] = []
    for sig in signals:
        if refresh is not None:
            pids = refresh()
        for pid in pids:
            try:
                os.kill(pid, sig)
                killed.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10.0
        while pids and time.time() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and _alive(p)]
            time.sleep(0.2)
        if not pids:
            break
    return killed


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
