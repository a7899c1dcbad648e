"""YAML and JSON readers for user files that refuse a repeated key.

PyYAML and ``json`` keep the last of two equal keys of a mapping without a word, so a space file
with ``lr0`` twice, or a data YAML with ``names`` twice, would silently lose the first value. The
readers here raise :class:`DuplicateKeyError` instead, naming the key and where it repeats.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "UniqueKeyLoader", "NumberLoader", "load_yaml", "safe_load", "json_loads"]


class DuplicateKeyError(yaml.YAMLError, ValueError):
    """A mapping repeats a key.

    Attributes:
        key: the repeated key.
        line: 1-based line of the repeat (``None`` for JSON).
        first_line: 1-based line of the first occurrence (``None`` for JSON).
    """

    def __init__(self, key: Any, line: int | None = None, first_line: int | None = None):
        self.key, self.line, self.first_line = key, line, first_line
        where = f" at line {line} (first at line {first_line})" if line is not None else ""
        super().__init__(f"key {key!r} repeats{where}")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (:class:`DuplicateKeyError`).

    Keys brought in by a merge (``<<: *anchor``) may be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise DuplicateKeyError(key, line, first)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class NumberLoader(UniqueKeyLoader):
    """:class:`UniqueKeyLoader` that also reads ``1e-5`` and ``1E-5`` as numbers.

    PyYAML follows YAML 1.1, whose float needs a dot and a signed exponent (``1.0e-5``), so it
    reads ``1e-5`` as a string; the ``yolo`` CLI (``ast.literal_eval``) and YAML 1.2 read a number.
    """


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(stream: Any) -> Any:
    """``yaml.safe_load`` that reads exponent numbers without a dot (``1e-5``) as floats and refuses
    a repeated key (:class:`DuplicateKeyError`)."""
    return yaml.load(stream, Loader=NumberLoader)


def safe_load(stream: Any) -> Any:
    """``yaml.safe_load`` that refuses a repeated key (:class:`DuplicateKeyError`)."""
    return yaml.load(stream, Loader=UniqueKeyLoader)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def json_loads(text: str) -> Any:
    """``json.loads`` that refuses an object repeating a key (:class:`DuplicateKeyError`)."""
    return json.loads(text, object_pairs_hook=_unique_pairs)
