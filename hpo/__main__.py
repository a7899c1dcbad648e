"""``python -m hpo``: the ``hpo`` command (:func:`hpo.cli.main`), for environments without the console script on PATH."""

from .cli import main

if __name__ == "__main__":
    main()
