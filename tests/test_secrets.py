"""No credential persists: a password planted in the Optuna storage URL and in the MLflow tracking
URI reaches no file of the study, no file of the MLflow store (its database, artifacts, log), no
output of ``hpo`` (progress, errors, ``hpo show``), no output of the KFP component under
``kfp.local`` and no compiled pipeline, while the real connections use it.

Real engines: the session's PostgreSQL server (tests/engines.py) with a role that needs its
password (``scram-sha-256``), a real ``mlflow server``; trials are simulated (what a trial learns is
not the point here). Passwords are made at run time: nothing credential-shaped is committed.
"""

import json
import os
import secrets
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import hpo_cli

from hpo.redact import has_secret, mask_secrets, mask_text

SPACE = json.dumps({"lr0": [1e-4, 1e-2], "momentum": [0.6, 0.98]})
SIMULATED = {"HPO_TRAINER": "hpo.simulate:simulated_trainer", "HPO_TRAINER_OPTIONS": "{}"}
IMAGE = "registry.example.com/team/hpo:0.1.0"


def _password(prefix: str = "") -> str:
    return prefix + "pw" + secrets.token_hex(8)


def _forms(password: str) -> set[str]:
    """The password as written and as it would appear percent-encoded in a URL."""
    return {password, quote(password, safe=""), quote(password)}


def _leaks(roots: list[Path], passwords: list[str]) -> list[str]:
    """``path: password`` for every file under ``roots`` whose bytes hold one of ``passwords``."""
    found = []
    for root in roots:
        for f in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            data = f.read_bytes()
            found += [f"{f}: {p}" for pw in passwords for p in _forms(pw) if p.encode() in data]
    return found


def _in_text(text: str, passwords: list[str]) -> list[str]:
    return [p for pw in passwords for p in _forms(pw) if p in text]


def _scram_role(postgres, name: str, password: str) -> None:
    """A PostgreSQL role that must give its password (scram-sha-256 from 127.0.0.1), owning a
    database of its name. The server's other roles keep their trust authentication."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
    hba = postgres.data / "pg_hba.conf"
    hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())  # first match wins
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")


def _set_password(postgres, name: str, password: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))


def test_mask_text_hides_the_password_in_every_form_a_url_takes():
    pw = _password()  # made at run time: nothing credential-shaped is committed
    cases = {
        f"postgresql://hpo:{pw}@db:5432/optuna": "postgresql://hpo:***@db:5432/optuna",
        f"postgresql+psycopg://hpo:{pw}/x@y@db/optuna": "postgresql+psycopg://hpo:***@db/optuna",  # '/' and '@' unencoded
        f"http://u:{pw}%40x@mlflow:5000": "http://u:***@mlflow:5000",
        f"API request to http://u:{pw}@127.0.0.1:1/api/2.0/x failed": "API request to http://u:***@127.0.0.1:1/api/2.0/x failed",
        f"https://h/x?token={pw}&api_key={pw}&page=2": "https://h/x?token=***&api_key=***&page=2",
        f"s3://b/k?X-Amz-Signature={pw}&X-Amz-Date=1": "s3://b/k?X-Amz-Signature=***&X-Amz-Date=1",
        f"host=db user=hpo password={pw}": "host=db user=hpo password=***",
    }
    for given, masked in cases.items():
        assert mask_text(given) == masked, given
        assert mask_text(masked) == masked  # idempotent: stored settings compare equal
    for plain in ("postgresql://hpo@db/optuna", "http://127.0.0.1:5000", "sqlite:////tmp/o.db", "/vol/optuna/journal.log"):
        assert mask_text(plain) == plain and not has_secret(plain)
    options = {"storage": "mysql://root:pw@h/db", "api_token": "abc", "secret_name": "hpo-credentials", "max_tokens": 3}
    assert mask_secrets(options) == {
        "storage": "mysql://root:***@h/db",
        "api_token": "***",
        "secret_name": "hpo-credentials",
        "max_tokens": 3,
    }


@pytest.mark.slow
def test_a_planted_password_reaches_no_file_log_mlflow_store_or_kfp_output(tmp_path, postgres, capfd):
    from kfp import local
    from mlflow import MlflowClient
    from test_tracking import MlflowServer

    from hpo import Study
    from hpo.datasets import make_digits_cls
    from hpo_kfp import make_tune_component

    role = f"hpo_secret_{os.getpid()}"
    first, rotated, mlflow_pw = _password("S3/"), _password(), _password()  # '/' as SQLAlchemy takes it unencoded
    planted = [first, rotated, mlflow_pw]
    _scram_role(postgres, role, first)
    port = postgres.url.rsplit(":", 1)[1].split("/")[0]

    def storage(password: str) -> str:
        return f"postgresql://{role}:{password}@127.0.0.1:{port}/{role}"

    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        mnt = tmp_path / "pvc"
        make_digits_cls(mnt / "digits-cls", seed=0, imgsz=8)
        env = {
            **SIMULATED,
            "HPO_PLOTS": "1",
            "MLFLOW_TRACKING_URI": f"http://mlflow-user:{mlflow_pw}@127.0.0.1:{server.port}",
        }

        def tune(password: str, iterations: int, *extra: str) -> subprocess.CompletedProcess:
            return hpo_cli(
                "tune",
                "--backend",
                "optuna",
                "--model",
                "yolov8n-cls.yaml",
                "--data",
                str(mnt / "digits-cls"),
                "--output",
                str(mnt / "studies"),
                "--name",
                "s",
                "--iterations",
                str(iterations),
                "--epochs",
                "2",
                "--space",
                SPACE,
                "--seed",
                "0",
                "--pruner",
                "none",
                "--storage",
                storage(password),
                *extra,
                "imgsz=32",
                env=env,
                cwd=tmp_path,
            )

        outputs = []
        r = tune(first, 2)
        outputs.append(r)
        assert r.returncode == 0, r.stderr
        study_dir = mnt / "studies" / "s"
        masked = f"postgresql://{role}:***@127.0.0.1:{port}/{role}"
        assert Study.open(study_dir).settings["options"]["storage"] == masked

        # the password is rotated: the old one is refused by the server (one line, masked), nothing added
        _set_password(postgres, role, rotated)
        r = tune(first, 3, "--resume")
        outputs.append(r)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "password authentication failed" in r.stderr and masked in r.stderr
        assert len(Study.open(study_dir).finished()) == 2

        # the same URL with the new password resumes the study: the password is no setting of the study
        r = tune(rotated, 3, "--resume")
        outputs.append(r)
        assert r.returncode == 0, r.stderr
        study = Study.open(study_dir)
        assert len(study.finished()) == 3 and study.settings["options"]["storage"] == masked
        assert "options" not in study.settings["resumes"][-1]["changed"]  # not recorded as a change

        for what in (("--json",), ("--csv",), ("--all",)):
            r = hpo_cli("show", str(study_dir), *what)
            outputs.append(r)
            assert r.returncode == 0, r.stderr

        # the KFP component (kfp.local) resumes the same study with the URL from a Secret's variable
        os.environ.update({**env, "HPO_STORAGE": storage(rotated)})
        try:
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root"))
            task = make_tune_component(IMAGE)(
                model="yolov8n-cls.yaml",
                data="digits-cls",
                backend="optuna",
                iterations=4,
                epochs=2,
                space=SPACE,
                mount_path=str(mnt),
                output_dir="studies",
                study_name="s",
                train_args={"imgsz": 32},
                backend_options={"pruner": "none"},
                seed=0,
                storage_env="HPO_STORAGE",
            )
        finally:
            for k in (*env, "HPO_STORAGE"):
                os.environ.pop(k, None)
        assert task.outputs["metrics"].metadata["trials"] == 4
        assert len(Study.open(study_dir).finished()) == 4

        # MLflow got the masked URL as the parent run's param
        client = MlflowClient(tracking_uri=server.uri)
        parent = json.loads((study_dir / "mlflow.json").read_text())["parent_run_id"]
        assert client.get_run(parent).data.params["options.storage"] == masked

        logs = capfd.readouterr()
        text = "\n".join([logs.out, logs.err, *(o.stdout + o.stderr for o in outputs)])
        assert "***" in text and not _in_text(text, planted)
        leaks = _leaks([study_dir, tmp_path / "kfp-root", tmp_path / "mlflow"], planted)
        assert not leaks, leaks
        assert (study_dir / "plots" / "report.html").is_file() and any((tmp_path / "mlflow").rglob("study.json"))
    finally:
        server.stop()


def test_mlflow_errors_never_show_the_tracking_uri_password(tmp_path, digits_cls):
    """MLflow's own error text echoes the tracking URI, password included."""
    pw = _password()
    r = hpo_cli(
        "tune",
        "--model",
        "yolov8n-cls.yaml",
        "--data",
        str(digits_cls),
        "--output",
        str(tmp_path / "out"),
        "--iterations",
        "1",
        "--epochs",
        "1",
        "--mlflow",
        "imgsz=32",
        "optimizer=AdamW",
        env={**SIMULATED, "MLFLOW_TRACKING_URI": f"http://u:{pw}@127.0.0.1:1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
        cwd=tmp_path,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "could not be reached" in r.stderr and "***" in r.stderr
    assert not _in_text(r.stdout + r.stderr, [pw])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("form", ["file-uri", "path"])
def test_mlflow_file_store_is_refused_before_anything_is_written(tmp_path, digits_cls, form):
    """MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE=true: bad input, one line, exit 2."""
    store = tmp_path / "mlruns"
    uri = store.as_uri() if form == "file-uri" else str(store)
    args = ("tune", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls), "--output", str(tmp_path / "out"))
    args += ("--iterations", "1", "--epochs", "1", "--name", "fs", "imgsz=32", "optimizer=AdamW")
    env = {**SIMULATED, "MLFLOW_TRACKING_URI": uri}
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # MLflow's default: file stores refused
    r = hpo_cli(*args, env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    err = r.stderr.strip()
    assert err.startswith("hpo: error: MLFLOW_TRACKING_URI: ") and "file store" in err, err
    assert "MLFLOW_ALLOW_FILE_STORE=true" in err and f"sqlite:///{tmp_path / 'mlflow.db'}" in err, err
    assert not (tmp_path / "out").exists() and not store.exists()

    # the opt-out MLflow offers is honoured: the study is tracked in the file store
    r = hpo_cli(*args, env={**env, "MLFLOW_ALLOW_FILE_STORE": "true"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "fs" / "mlflow.json").read_text())["parent_run_id"]
    assert any(store.rglob("meta.yaml"))


def test_a_constant_task_argument_holding_a_password_is_refused_at_compile_time(tmp_path):
    """KFP writes constant task arguments into the compiled pipeline; the Secret route stays clean."""
    from kfp import compiler, dsl

    from hpo.errors import ConfigError
    from hpo_kfp import configure_tuning_task, make_tune_component

    pw = _password()
    hpo_tune = make_tune_component(IMAGE)
    with pytest.raises(ConfigError) as e:

        @dsl.pipeline(name="leaky")
        def leaky(pvc_name: str = "hpo-data") -> None:
            task = hpo_tune(
                model="yolov8n.yaml", data="d.yaml", backend="optuna", backend_options={"storage": f"postgresql://u:{pw}@db/o"}
            )
            configure_tuning_task(task, pvc_name=pvc_name)

    text = str(e.value)
    assert text.startswith("backend_options: ") and "postgresql://u:***@db/o" in text and "storage_env" in text
    assert pw not in text

    @dsl.pipeline(name="clean")
    def clean(pvc_name: str = "hpo-data") -> None:
        task = hpo_tune(model="yolov8n.yaml", data="d.yaml", backend="optuna", storage_env="HPO_STORAGE")
        configure_tuning_task(task, pvc_name=pvc_name, secret_name="hpo-credentials")

    compiler.Compiler().compile(clean, str(tmp_path / "clean.yaml"))
    # the example pipelines and the component, compiled where the credentials are in the environment
    env = {"HPO_STORAGE": f"postgresql://u:{pw}@db/o", "MLFLOW_TRACKING_URI": f"http://u:{pw}@mlflow:5000"}
    r = hpo_cli("pipelines", "compile", "--image", IMAGE, str(tmp_path / "compiled"), env=env)
    assert r.returncode == 0, r.stderr
    yamls = sorted((tmp_path / "compiled").glob("*.yaml")) + [tmp_path / "clean.yaml"]
    assert len(yamls) == 5 and "HPO_STORAGE" in (tmp_path / "clean.yaml").read_text()
    assert not _leaks(yamls, [pw])


def test_the_kfp_step_warns_about_a_password_in_its_parameters(tmp_path, capsys):
    from hpo.errors import ConfigError
    from hpo_kfp.step import run_tune_step

    pw = _password()
    with pytest.raises(ConfigError, match="data"):
        run_tune_step(
            model="yolov8n-cls.yaml",
            data="missing",
            backend="optuna",
            mount_path=str(tmp_path),
            backend_options={"storage": f"postgresql://u:{pw}@db/o"},
        )
    err = capsys.readouterr().err
    assert "hpo: warning: backend_options: " in err and "postgresql://u:***@db/o" in err and "storage_env" in err
    assert pw not in err


def test_a_study_stored_before_masking_loses_its_password_on_resume(tmp_path, digits_cls):
    """A study.json written by an older hpo holds the URL as given: a resume keeps the study (the
    masked forms are compared) and rewrites study.json with the masked URL."""
    journal = tmp_path / "j.db"
    base = ("tune", "--backend", "optuna", "--model", "yolov8n-cls.yaml", "--data", str(digits_cls), "--output")
    base += (str(tmp_path / "out"), "--name", "old", "--epochs", "1", "--space", SPACE, "--pruner", "none", "imgsz=32")
    r = hpo_cli(*base, "--iterations", "1", "--storage", f"sqlite:///{journal}", env=SIMULATED, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "out" / "old" / "study.json"
    pw = _password()
    doc = json.loads(path.read_text())
    # as an older hpo stored the storage option as given (a URL with its password); the resume gives
    # the journal again, a recorded change of a backend option
    doc["options"]["storage"] = f"postgresql://u:{pw}@host/x"
    doc["data_resolved_note"] = f"http://u:{pw}@host/x"
    path.write_text(json.dumps(doc))
    r = hpo_cli(*base, "--iterations", "2", "--resume", "--storage", f"sqlite:///{journal}", env=SIMULATED, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert pw not in path.read_text() and "http://u:***@host/x" in path.read_text()
