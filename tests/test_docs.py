"""The README's and docs' shell blocks hold as written, in order, each file in a fresh folder: the
dataset commands run for real, every other ``hpo`` line names a real command, real options (no
deprecated spelling) and data that an earlier line of the same file built."""

import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT, hpo_cli

DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def _hpo_lines(path: Path) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
    if path.name == "README.md":
        blocks = blocks[2:]  # the first two are the set-up commands (a venv, pip install)
    out = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["hpo"]:
                out.append(words[1:])
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_doc_blocks_run_in_order_in_a_fresh_folder(doc, tmp_path):
    import typer

    from hpo.backend_options import normalize_options
    from hpo.cli import app, split_extra_args
    from hpo.plugins import backends

    commands = typer.main.get_command(app).commands
    tune_cmd = commands["tune"]
    tune_flags = {o: p for p in tune_cmd.params for o in (*p.opts, *p.secondary_opts)}
    for words in _hpo_lines(ROOT / doc):
        assert words and words[0] in commands, f"{doc}: hpo {' '.join(words)}: no such command"
        if words[:2] == ["datasets", "make"]:
            r = hpo_cli(*words, cwd=tmp_path)
            assert r.returncode == 0, f"{doc}: hpo {' '.join(words)}: {r.stderr}"
            continue
        if words[0] == "backends":
            assert hpo_cli(*words, cwd=tmp_path).returncode == 0
        if words[0] != "tune":
            continue
        known, rest, i = {}, [], 1
        while i < len(words):
            w = words[i]
            if w in tune_flags:
                assert not tune_flags[w].hidden, f"{doc}: {w} is deprecated (hpo tune --help)"
                if tune_flags[w].is_flag:
                    i += 1
                    continue
                known[tune_flags[w].name] = words[i + 1]
                i += 2
            else:
                rest.append(w)
                i += 1
        backend = known.get("backend", "ultralytics")
        _train, options = split_extra_args(rest)
        normalize_options(backend, backends()[backend], options)  # raises on a misspelled option
        data = Path(known["data"])
        assert data.is_absolute() or (tmp_path / data).exists(), f"{doc}: --data {data} is not built by an earlier line"
