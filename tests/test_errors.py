"""The exception hierarchy: names end in ``Error``, study errors are not bad-input errors, exit codes."""

from __future__ import annotations

import inspect

from conftest import hpo_cli

import hpo
import hpo.errors


def test_exported_exception_names_end_in_error_and_there_are_no_aliases():
    """Nothing was released, so the old names (``BackendNotFound``, ``StudyLocked``, ``RunFailed``) are gone."""
    classes = {n: c for n, c in vars(hpo.errors).items() if inspect.isclass(c) and issubclass(c, BaseException)}
    assert all(c.__name__ == n for n, c in classes.items()), sorted(classes)
    assert not {"BackendNotFound", "StudyLocked", "RunFailed"} & (set(vars(hpo)) | set(vars(hpo.errors)))
    assert all(n.endswith("Error") for n in set(classes) - {"HpoWarning"}), sorted(classes)
    for name in ("BackendNotFoundError", "StudyLockedError", "RunFailedError", "StudyError"):
        assert name in hpo.__all__ and getattr(hpo, name) is classes[name]


def test_study_errors_are_not_config_errors_and_still_exit_2():
    from hpo.errors import ConfigError, HpoError, StudyError, StudyLockedError

    assert not issubclass(StudyError, ConfigError) and not issubclass(StudyError, ValueError)
    assert issubclass(StudyLockedError, StudyError) and issubclass(StudyError, HpoError)
    assert StudyError("x").exit_code == 2 and StudyLockedError("x").exit_code == 2
    assert hpo.errors.BackendNotFoundError("x").exit_code == 2 and hpo.errors.RunFailedError("x").exit_code == 1


def test_a_study_error_is_one_line_and_exit_2_on_the_command_line(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    (study / "study.json").write_text("[]")
    r = hpo_cli("show", str(study))
    assert r.returncode == 2 and r.stderr.startswith("hpo: error: study: ") and len(r.stderr.splitlines()) == 1, r.stderr
