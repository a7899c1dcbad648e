"""Conformance tests every backend passes: the same study semantics whatever searches.

A backend's test module subclasses :class:`BackendConformance` and names the backend::

    from hpo.testing import BackendConformance

    class TestMyBackendConformance(BackendConformance):
        backend = "mine"                 # the --backend name (installed through entry points)
        options = ("--my-option", "3")   # extra CLI options the backend needs here (optional)

Each test runs the real ``hpo`` command the way a user does (the tests import nothing of the
backend). Almost all of them run on *simulated* trials (:mod:`hpo.simulate`: learning curves from
a formula, no training, milliseconds per trial; selected with ``HPO_TRAINER``), so the backend's
real sampler, pruner or scheduler runs through hpo's real loop, records and resume in seconds.
They check what the core promises on every backend:

- every trial's params fit the search space (bounds, and the type of every key: integer keys
  stay integers, choices are among the choices);
- a training error and a NaN objective are recorded ``failed`` (never objective 0), and every
  other trial's objective is the value its curve reached;
- a backend that prunes (:attr:`BackendConformance.prunes`) stops poor trials early, recorded
  ``pruned`` with the objective of their last epoch; one that does not trains every trial fully;
- the same ``--seed`` proposes the same trials (:attr:`BackendConformance.deterministic`);
- a SIGKILL mid-study, then ``--resume``, ends with exactly ``--iterations`` finished trials and
  every trial that had completed before the kill kept as it was;
- SIGTERM with two trials at once (``--concurrent-trials 2``) exits 130; the in-flight trials are
  recorded ``interrupted`` (never ``failed``), no trial starts after the signal, and ``--resume``
  re-runs them with their ids and params;
- ``--trial-timeout`` stops a trial and records it ``failed`` with the reason; a study whose every
  trial failed exits 1 and has no best, and so does its ``--resume`` with nothing to do;
- a volume that fills up mid-study (a real size-limited tmpfs; needs root) stops the run with
  exit 1 and one line naming the volume; ``hpo show`` still reads the study; ``--resume`` after
  space is freed completes it with no completed trial lost;
- ``--join`` (backends with ``supports_join``): two processes share one study and together stop
  at exactly ``--iterations`` trials with unique ids (ordered by events, not time: the writer's
  trials wait until the joined process has started one); ``--join`` of a study that no live process
  writes, or with another ``--iterations``, exits 2 naming the fix, and writes nothing;
- ``--time-budget`` ends the study at an epoch boundary; a study it ended before any trial
  completed exits 1 (also on a ``--resume`` with nothing left), and a larger budget continues it;

and one short real-training smoke test (``yolov8n-cls`` on the built-in digits at 32 px) checks
that real Ultralytics trials record real metrics.

Requires pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

__all__ = ["BackendConformance", "TRAIN_ARGS", "SIMULATED", "SPACE", "LINEAR_SPACE"]

#: Fixed train args of the real-training smoke test: a few seconds per trial on a 2-core CPU.
TRAIN_ARGS = ("imgsz=32", "batch=64", "workers=0", "optimizer=AdamW")
#: The simulated trainer (:mod:`hpo.simulate`).
SIMULATED = "hpo.simulate:simulated_trainer"
#: The default conformance space: a log float, a linear float, an integer and a choice key.
SPACE: dict[str, Any] = {
    "lr0": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "momentum": [0.6, 0.98],
    "close_mosaic": [0, 10],
    "optimizer": {"type": "choice", "choices": ["SGD", "AdamW"]},
}
#: For backends that search linear ranges only (ultralytics): floats and an integer.
LINEAR_SPACE: dict[str, Any] = {"lr0": [1e-4, 1e-1], "momentum": [0.6, 0.98], "close_mosaic": [0, 10]}


def _records(study: Path) -> dict[int, dict[str, Any]]:
    """Last snapshot per trial id, read the way a person would (every trials*.jsonl, skip a torn tail)."""
    out: dict[int, dict[str, Any]] = {}
    for f in sorted(study.glob("trials*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            prev = out.get(rec["id"])
            finished = ("complete", "failed", "pruned")
            if prev is None or not (prev["status"] in finished and rec["status"] not in finished):
                out[rec["id"]] = rec
    return out


def _wait(what: str, cond: Any, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the study ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"timed out waiting for {what}")


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the volume is full to the last block."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)


class BackendConformance:
    """Subclass in a backend's tests (``class TestXConformance(BackendConformance): backend = "x"``).

    Attributes:
        backend: the ``--backend`` name.
        options: extra ``--option value`` tokens for ``hpo tune`` (e.g. a local Ray's CPUs).
        env: extra environment variables of the ``hpo`` processes (e.g. ``PYTHONPATH`` of a plugin).
        space: the search space of the simulated studies (default :data:`SPACE`; :data:`LINEAR_SPACE`
            for a backend that refuses log and choice keys).
        prunes: whether the backend, with its default options, stops poor trials early.
        no_pruning: options that turn the backend's early stopping off (the timeout test needs
            trials that run until stopped), e.g. ``("--pruner", "none")``.
        deterministic: whether one ``--seed`` gives one sequence of trials (one trial at a time).
        joins: whether the backend supports ``--join`` (tested then).
        train_args: the fixed ``KEY=VALUE`` train args (default :data:`TRAIN_ARGS` on the CPU; a
            backend that assigns devices itself, like ray, drops ``device=``).
        supports_volume_test: set ``False`` only for a backend whose own library cannot run on a
            size-limited volume (say why in the subclass).
        budget_s: the ``--time-budget`` of the budget test, seconds (default 2; more for a backend
            that takes long to start, such as a local Ray).
        real_smoke: ``False`` skips the real-training smoke test (only when the backend's own
            tests already train for real).
    """

    backend: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    env: ClassVar[dict[str, str]] = {}
    space: ClassVar[dict[str, Any]] = SPACE
    prunes: ClassVar[bool] = True
    no_pruning: ClassVar[tuple[str, ...]] = ()
    deterministic: ClassVar[bool] = True
    joins: ClassVar[bool] = False
    train_args: ClassVar[tuple[str, ...]] = (*TRAIN_ARGS, "device=cpu")
    supports_volume_test: ClassVar[bool] = True
    budget_s: ClassVar[float] = 2.0
    real_smoke: ClassVar[bool] = True

    # --- fixtures and helpers
    @pytest.fixture(scope="class")
    @classmethod
    def digits(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The built-in digits-cls dataset (real UCI digits), cut to 30 train / 10 val images per
        class so a real trial takes a few seconds; built once per class."""
        from hpo.datasets import make_digits_cls

        root = make_digits_cls(tmp_path_factory.mktemp("conformance-data") / "digits-cls", seed=0)
        for split, keep in (("train", 30), ("val", 10)):
            for folder in (root / split).iterdir():
                for extra in sorted(folder.iterdir())[keep:]:
                    extra.unlink()
        return root

    def tune_args(
        self,
        data: Path,
        output: Path,
        name: str,
        *,
        iterations: int | None,
        epochs: int,
        extra: tuple[str, ...] = (),
        space: dict[str, Any] | None = None,
        real: bool = False,
    ) -> list[str]:
        """The ``hpo tune`` arguments of a conformance study (``real``: with :attr:`train_args`)."""
        return [
            "tune",
            "--backend",
            self.backend,
            "--model",
            "yolov8n-cls.yaml",
            "--data",
            str(data),
            *(("--iterations", str(iterations)) if iterations is not None else ()),
            "--epochs",
            str(epochs),
            "--output",
            str(output),
            "--name",
            name,
            "--space",
            json.dumps(space or self.space),
            "--seed",
            "0",
            *extra,
            *self.options,
            *(self.train_args if real else ("imgsz=32",)),
        ]

    def environment(self, simulated: dict[str, Any] | None) -> dict[str, str]:
        """The ``hpo`` processes' environment: this one, :attr:`env`, and the simulated trainer
        with its options (``simulated=None``: real training)."""
        env = {**os.environ, **self.env, "HPO_PLOTS": "0"}
        env.pop("HPO_TRAINER", None)
        env.pop("HPO_TRAINER_OPTIONS", None)
        if simulated is not None:
            env["HPO_TRAINER"] = SIMULATED
            env["HPO_TRAINER_OPTIONS"] = json.dumps(simulated)
        return env

    def hpo(self, *args: str, simulated: dict[str, Any] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run ``python -m hpo.cli ARGS`` to the end and capture its output."""
        return subprocess.run(
            [sys.executable, "-m", "hpo.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment(simulated),
        )

    def start(self, *args: str, simulated: dict[str, Any] | None = None) -> subprocess.Popen:
        """Start ``python -m hpo.cli ARGS`` in its own process group (a pod: driver plus trial workers)."""
        return subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=self.environment(simulated),
        )

    def show(self, study: Path) -> dict[str, Any]:
        """What ``hpo show --json STUDY`` prints (:func:`hpo.report.study_summary`, read in this
        process: the command itself is tested in hpo's own suite)."""
        from hpo.report import study_summary

        return json.loads(json.dumps(study_summary(study)))

    def assert_resumed_to(self, study: Path, total: int, kept: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """The study has exactly ``total`` finished trials with unique ids, and every trial of ``kept``
        that was complete is unchanged (params and objective)."""
        shown = self.show(study)
        finished = [t for t in shown["trials"] if t["status"] in ("complete", "failed", "pruned")]
        assert len(finished) == total, shown["trials"]
        ids = [t["id"] for t in shown["trials"]]
        assert len(ids) == len(set(ids))
        now = {t["id"]: t for t in shown["trials"]}
        for tid, rec in kept.items():
            if rec["status"] == "complete":
                assert now[tid]["status"] == "complete"
                assert now[tid]["params"] == rec["params"] and now[tid]["objective"] == rec["objective"]
        return shown

    def assert_params_fit(self, trials: list[dict[str, Any]]) -> None:
        """Every trial has a value for every key of :attr:`space`, inside its bounds, of its type."""
        from hpo import Kind, SearchSpace

        space = SearchSpace.parse(self.space)
        for t in trials:
            assert set(t["params"]) == set(space), (t["id"], t["params"])
            for key, p in space.items():
                v = t["params"][key]
                if p.kind is Kind.CHOICE:
                    assert v in p.choices, (t["id"], key, v)
                    continue
                if p.kind is Kind.INT:
                    assert isinstance(v, int) and not isinstance(v, bool), f"trial {t['id']}: {key}={v!r} is not an integer"
                else:
                    assert isinstance(v, float), f"trial {t['id']}: {key}={v!r} is not a float"
                assert p.low <= v <= p.high, f"trial {t['id']}: {key}={v} outside [{p.low}, {p.high}]"

    # --- the conformance tests, on simulated trials
    def test_params_fit_the_space_failures_are_failed_and_objectives_are_the_curves(self, tmp_path: Path, digits: Path) -> None:
        from hpo.simulate import curve_value

        epochs = 6
        r = self.hpo(*self.tune_args(digits, tmp_path, "sim", iterations=12, epochs=epochs), simulated={"fail": [1], "nan": [2]})
        assert r.returncode == 0, r.stderr[-3000:]
        trials = {t["id"]: t for t in self.show(tmp_path / "sim")["trials"]}
        assert sorted(trials) == list(range(12)), sorted(trials)
        self.assert_params_fit(list(trials.values()))
        assert trials[1]["status"] == "failed" and "simulated training error of trial 1" in trials[1]["error"]
        assert trials[2]["status"] == "failed" and "nan" in trials[2]["error"].lower(), trials[2]
        for t in trials.values():
            if t["status"] == "failed":
                assert t["objective"] is None, t  # never objective 0
                continue
            n = t["epochs_completed"]
            assert t["objective"] == pytest.approx(curve_value(t["params"], n, "metrics/accuracy_top1")), t
            if t["status"] == "complete":
                assert n == epochs, t
            else:
                assert t["status"] == "pruned" and 1 <= n < epochs, t
        pruned = [t for t in trials.values() if t["status"] == "pruned"]
        if self.prunes:
            assert pruned, f"backend {self.backend} pruned no trial of 12 (6 epochs each)"
        else:
            assert not pruned, pruned

    def test_the_same_seed_proposes_the_same_trials(self, tmp_path: Path, digits: Path) -> None:
        if not self.deterministic:
            pytest.skip(f"backend {self.backend} is not deterministic for a seed")
        runs = []
        for name in ("a", "b"):
            r = self.hpo(*self.tune_args(digits, tmp_path, name, iterations=5, epochs=2), simulated={})
            assert r.returncode == 0, r.stderr[-3000:]
            runs.append([t["params"] for t in sorted(self.show(tmp_path / name)["trials"], key=lambda t: t["id"])])
        assert runs[0] == runs[1]
        assert len({json.dumps(p, sort_keys=True) for p in runs[0]}) > 1, "every trial proposed the same params"

    def test_sigkill_then_resume_reaches_exactly_n(self, tmp_path: Path, digits: Path) -> None:
        sim = {"epoch_s": 0.3}
        args = self.tune_args(digits, tmp_path, "kill", iterations=5, epochs=3, extra=self.no_pruning)
        study = tmp_path / "kill"
        proc = self.start(*args, simulated=sim)

        def one_done_one_mid() -> bool:
            recs = _records(study).values()
            return any(r["status"] == "complete" for r in recs) and any(
                r["status"] == "running" and r.get("epochs") for r in recs
            )

        _wait("a complete trial and another mid-training", one_done_one_mid, proc, 300)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its trial workers, like a dead pod
        proc.wait()
        before = _records(study)
        r = self.hpo(*args, "--resume", simulated={})  # the rest without sleeping: the trainer's options are not the study's
        assert r.returncode == 0, r.stderr[-3000:]
        assert "took over the lock of a writer that is gone" in r.stderr  # at once: the kernel proved it dead
        self.assert_resumed_to(study, 5, before)

    def test_sigterm_with_two_at_once_records_interrupted_and_resume_reruns_them(self, tmp_path: Path, digits: Path) -> None:
        sim = {"epoch_s": 0.4}
        args = self.tune_args(
            digits, tmp_path, "term", iterations=5, epochs=4, extra=("--concurrent-trials", "2", *self.no_pruning)
        )
        study = tmp_path / "term"
        proc = self.start(*args, simulated=sim)

        def two_training() -> bool:
            recs = _records(study).values()
            return (
                sum(1 for r in recs if r["status"] == "running" and r.get("epochs")) >= 1
                and sum(1 for r in recs if r["status"] == "running") >= 2
            )

        _wait("two trials training at once", two_training, proc, 300)
        in_flight = {i: r for i, r in _records(study).items() if r["status"] == "running"}
        from hpo.study import utcnow

        signalled = utcnow()
        proc.send_signal(signal.SIGTERM)  # what Kubernetes sends a pod before killing it
        try:
            _, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("hpo did not stop within 90 s of SIGTERM")
        assert proc.returncode == 130, err[-3000:]
        assert "--resume" in err.strip().splitlines()[-1]
        after = _records(study)
        late = [r["id"] for r in after.values() if r["id"] not in in_flight and (r.get("start") or "") > signalled]
        assert not late, f"trials {late} started after the interrupt"
        for tid in in_flight:
            assert after[tid]["status"] in ("interrupted", "complete", "pruned"), after[tid]  # never 'failed'
        assert any(after[tid]["status"] == "interrupted" for tid in in_flight), after
        r = self.hpo(*args, "--resume", simulated={})
        assert r.returncode == 0, r.stderr[-3000:]
        shown = self.assert_resumed_to(study, 5, after)
        now = {t["id"]: t for t in shown["trials"]}
        for tid, rec in in_flight.items():  # re-run under their ids with their params
            assert now[tid]["status"] in ("complete", "pruned"), now[tid]
            assert now[tid]["params"] == rec["params"]

    def test_trial_timeout_is_failed_and_all_failed_exits_1(self, tmp_path: Path, digits: Path) -> None:
        r = self.hpo(
            *self.tune_args(digits, tmp_path, "slow", iterations=2, epochs=50, extra=("--trial-timeout", "2", *self.no_pruning)),
            simulated={"epoch_s": 0.5},
        )
        assert r.returncode == 1, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert "every trial failed" in last and "timed out after 2 s" in last, last
        shown = self.show(tmp_path / "slow")
        assert [t["status"] for t in shown["trials"]] == ["failed", "failed"]
        assert all(t["objective"] is None for t in shown["trials"]) and shown["best"] is None
        assert all(t["epochs_completed"] < 50 for t in shown["trials"])

    def test_resume_of_a_study_whose_every_trial_failed_exits_1(self, tmp_path: Path, digits: Path) -> None:
        """Nothing to do is no result: the resume of a study with no complete trial fails too (a KFP
        retry must not turn green), with one line naming the first error, also with ``--json``."""
        args = self.tune_args(digits, tmp_path, "failed", iterations=2, epochs=2, extra=self.no_pruning)
        r = self.hpo(*args, simulated={"fail": [0, 1]})
        assert r.returncode == 1, r.stderr[-3000:]
        assert "every trial failed; first error (trial 0): " in r.stderr.strip().splitlines()[-1], r.stderr[-3000:]
        r = self.hpo(*args, "--resume", "--json", simulated={"fail": [0, 1]})
        assert r.returncode == 1, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("hpo: error: every trial failed (the study already has its 2 finished trials"), last
        assert "simulated training error of trial 0" in last and "--name" in last, last
        assert '"nothing_to_do"' not in r.stdout and not r.stdout.strip(), r.stdout  # no result document
        assert [t["status"] for t in self.show(tmp_path / "failed")["trials"]] == ["failed", "failed"]

    def test_full_volume_stops_with_exit_1_and_resumes(self, tmp_path: Path, digits: Path) -> None:
        if not self.supports_volume_test:
            pytest.skip(f"backend {self.backend} does not run on a size-limited volume")
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a size-limited tmpfs needs root")
        vol = tmp_path / "vol"
        vol.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(vol)], capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here")
        try:
            self._full_volume(vol, digits)
        finally:
            subprocess.run(["umount", "-l", str(vol)], capture_output=True)

    def _full_volume(self, vol: Path, digits: Path) -> None:
        sim = {"epoch_s": 0.5, "weights_bytes": 2 << 20}
        args = self.tune_args(digits, vol, "full", iterations=4, epochs=3, extra=self.no_pruning)
        study = vol / "full"
        proc = self.start(*args, simulated=sim)

        def one_done_one_mid() -> bool:
            recs = _records(study).values()
            return any(r["status"] == "complete" for r in recs) and any(r["status"] == "running" for r in recs)

        _wait("a complete trial and another started", one_done_one_mid, proc, 300)
        started = set(_records(study))
        ballast = vol / "ballast"
        _fill(ballast)
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("hpo kept running on a full volume")
        assert proc.returncode == 1, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("hpo: error: output volume") and str(vol) in last and "--resume" in last, err[-3000:]
        assert "Traceback" not in err, err[-6000:]
        assert set(_records(study)) <= started | {max(started) + 1}, "trials kept starting on a full volume"
        before = _records(study)
        assert any(r["status"] == "complete" for r in before.values())
        assert not any(r["status"] == "failed" for r in before.values()), before  # the volume's fault, not the trials'
        shown = self.show(study)  # readable while the volume is still full
        assert {t["id"] for t in shown["trials"]} == set(before)
        for f in study.rglob("*"):  # every JSON file of the study (the backends' state too) still parses
            if f.is_file() and (f.suffix in (".json", ".jsonl", ".ndjson") or f.name == "journal.log") and f.stat().st_size:
                text = f.read_text(errors="replace")
                if text.lstrip()[:1] not in ("{", "["):
                    continue  # not JSON inside (Ray's basic-variant-state-*.json is a pickle)
                try:
                    json.loads(text)
                except ValueError:
                    for n, line in enumerate(text.splitlines()):
                        try:
                            json.loads(line)
                        except ValueError:
                            # a torn tail is allowed only where hpo repairs it before writing again
                            assert n == len(text.splitlines()) - 1, f"{f} line {n + 1} is damaged"
        ballast.unlink()
        r = self.hpo(*args, "--resume", simulated={"weights_bytes": sim["weights_bytes"]})
        assert r.returncode == 0, r.stderr[-3000:]
        self.assert_resumed_to(study, 4, before)

    def test_join_two_processes_reach_exactly_n(self, tmp_path: Path, digits: Path) -> None:
        if not self.joins:
            pytest.skip(f"backend {self.backend} does not support --join")
        gate = tmp_path / "joined-started"
        args = self.tune_args(digits, tmp_path, "joined", iterations=8, epochs=3, extra=self.no_pruning)
        study = tmp_path / "joined"
        # events, not time: the writer's trials wait until the joined process has started one of its
        # own (simulated gate), so however loaded the machine, the writer cannot finish alone
        writer = self.start(*args, simulated={"epoch_s": 0.1, "gate": str(gate), "gate_s": 300})
        _wait("the study to start", lambda: any(_records(study).values()), writer, 120)
        joined = self.hpo(*args, "--join", simulated={"epoch_s": 0.1, "open_gate": str(gate)})
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err[-3000:]
        assert joined.returncode == 0, joined.stderr[-3000:]
        trials = self.show(study)["trials"]
        assert len(trials) == 8 and sorted(t["id"] for t in trials) == sorted({t["id"] for t in trials})
        assert all(t["status"] in ("complete", "pruned", "failed") for t in trials)
        assert list(study.glob("trials.*.jsonl")), "the joined process recorded no trial of its own"

    def test_join_needs_a_live_writer_and_the_running_studys_iterations(self, tmp_path: Path, digits: Path) -> None:
        """``--join`` adds a process to a *running* study: with another ``--iterations`` it is refused
        (exit 2, nothing written); once no live process writes the study it is refused, naming
        ``--resume``, which continues it; a finished study joined with its own total has nothing to do."""
        if not self.joins:
            pytest.skip(f"backend {self.backend} does not support --join")
        args = self.tune_args(digits, tmp_path, "orphan", iterations=3, epochs=2, extra=self.no_pruning)
        five = self.tune_args(digits, tmp_path, "orphan", iterations=5, epochs=2, extra=self.no_pruning)
        study = tmp_path / "orphan"
        # the writer's first trial waits on a gate that never opens: the writer stays alive, unfinished
        writer = self.start(*args, simulated={"gate": str(tmp_path / "never"), "gate_s": 300})
        try:
            _wait("the study's first trial", lambda: any(_records(study).values()), writer, 120)
            r = self.hpo(*five, "--join", simulated={})
            assert r.returncode == 2, r.stderr[-3000:]
            last = r.stderr.strip().splitlines()[-1]
            assert (
                last
                == "hpo: error: join: the running study's totals differ (iterations: stored 3 != given 5); join with --iterations 3"
            ), last
            assert not list(study.glob("trials.*.jsonl"))
        finally:
            os.killpg(writer.pid, signal.SIGKILL)  # a dead writer: the study is left unfinished
            writer.wait()
        settings = (study / "study.json").read_text()
        r = self.hpo(*args, "--join", simulated={})
        assert r.returncode == 2, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert f"join: no process is running the study '{study}' (0 of 3 trials finished" in last and last.endswith(
            "continue this one with --resume"
        ), last
        assert not list(study.glob("trials.*.jsonl")) and (study / "study.json").read_text() == settings
        r = self.hpo(*args, "--resume", simulated={})
        assert r.returncode == 0, r.stderr[-3000:]
        assert [t["status"] for t in self.show(study)["trials"]] == ["complete"] * 3
        # a finished study nobody runs: more trials through --join are refused, its own total has nothing to do
        settings = (study / "study.json").read_text()
        r = self.hpo(*five, "--join", simulated={})
        assert r.returncode == 2 and "continue this one with --resume" in r.stderr.strip().splitlines()[-1], r.stderr[-3000:]
        r = self.hpo(*args, "--join", "--json", simulated={})
        assert r.returncode == 0 and json.loads(r.stdout)["nothing_to_do"] is True, r.stderr[-3000:]
        assert (study / "study.json").read_text() == settings and not list(study.glob("trials.*.jsonl"))

    def test_time_budget_ends_the_study_and_resume_continues_with_what_is_left(self, tmp_path: Path, digits: Path) -> None:
        sim = {"epoch_s": 0.25}
        budget = self.budget_s
        # trials of at least twice the budget (10 s at the default 2 s): no trial completes in it
        epochs = max(40, int(2 * budget / sim["epoch_s"]) + 8)
        # no --iterations: the budget alone ends the study
        args = self.tune_args(
            digits, tmp_path, "budget", iterations=None, epochs=epochs, extra=("--time-budget", f"{budget:g}s", *self.no_pruning)
        )
        # the budget ends the study before any trial completed: no result, exit 1 with the reason
        r = self.hpo(*args, "--json", simulated=sim)
        assert r.returncode == 1, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"hpo: error: time budget: {budget:g}s ended the study before any trial completed"), last
        assert "--time-budget" in last and not r.stdout.strip(), (last, r.stdout)
        study = tmp_path / "budget"
        settings = json.loads((study / "study.json").read_text())
        assert settings["time_budget"] == budget and settings["elapsed_s"] >= budget
        assert settings["elapsed_s"] < budget + 3 * sim["epoch_s"] + 5, settings  # stopped at the next epoch boundary
        trials = self.show(study)["trials"]
        assert trials and all(t["status"] == "pruned" for t in trials), trials
        for t in trials:  # stopped at an epoch boundary, recorded pruned with its partial curve
            assert "time budget" in t["error"] and 1 <= t["epochs_completed"] < epochs and t["objective"] is not None, t
        # the same budget again: nothing left, nothing runs, still no result: exit 1
        again = self.hpo(*args, "--resume", "--json", simulated=sim)
        assert again.returncode == 1, again.stderr[-3000:]
        assert "ended the study before any trial completed" in again.stderr.strip().splitlines()[-1]
        assert len(self.show(study)["trials"]) == len(trials)
        # a larger budget continues with what is left (the next trial is quick: it completes, and the
        # one after it trains when the budget runs out), and the change is recorded
        more = [a if a != f"{budget:g}s" else f"{2 * budget:g}" for a in args]
        r = self.hpo(*more, "--resume", "--json", simulated={**sim, "quick": [len(trials)]})
        assert r.returncode == 0, r.stderr[-3000:]
        doc = json.loads(r.stdout)
        assert doc["stopped_by"] == "time_budget" and doc["counts"]["complete"] >= 1, doc
        assert doc["elapsed_s"] < 2 * budget + 3 * sim["epoch_s"] + 5, doc  # stopped at the next epoch boundary
        settings = json.loads((study / "study.json").read_text())
        assert settings["time_budget"] == 2 * budget and settings["elapsed_s"] >= 2 * budget
        assert [x["changed"].get("time_budget") for x in settings["resumes"]] == [None, 2 * budget]
        now = self.show(study)["trials"]
        assert len(now) > len(trials) and any("time budget" in (t["error"] or "") for t in now[len(trials) :]), now

    # --- one real training
    def test_real_training_smoke(self, tmp_path: Path, digits: Path) -> None:
        """Two real Ultralytics trials of one epoch: complete, with the real metric in every epoch row."""
        if not self.real_smoke:
            pytest.skip(f"backend {self.backend}'s own tests train for real")
        r = self.hpo(*self.tune_args(digits, tmp_path, "real", iterations=2, epochs=1, space={"lr0": [1e-4, 1e-2]}, real=True))
        assert r.returncode == 0, r.stderr[-3000:]
        trials = self.show(tmp_path / "real")["trials"]
        assert [t["status"] for t in trials] == ["complete", "complete"], trials
        for t in trials:
            assert 0.0 <= t["objective"] <= 1.0
            assert (tmp_path / "real" / "trials" / str(t["id"]) / "train.log").is_file()
