"""Read a policy file: YAML into the typed model, every problem as ``FILE:LINE: KEY: what``.

The YAML is composed first (not only loaded) so that each key path knows its line, and so
that a key given twice is an error instead of the last one silently winning. A misspelt key
gets the nearest known one as a suggestion ("did you mean keep_last?").
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from drengine.core.errors import UsageError
from drengine.policy.model import PolicyFile

Path_ = tuple[str | int, ...]


class PolicyInvalid(UsageError):
    """A policy file that does not validate; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0] if len(problems) == 1 else f"{problems[0]} (and more)")
        self.problems = problems


@dataclass
class Loaded:
    path: Path
    policy: PolicyFile


def load_policy(path: str | Path) -> Loaded:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "it is not UTF-8 text"
        raise PolicyInvalid([f"{p}: cannot read the policy file: {why}"]) from None
    lines: dict[Path_, int] = {}
    problems: list[str] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(e, "problem", None) or str(e)
        raise PolicyInvalid([f"{where}: not valid YAML: {problem}"]) from None
    if node is None:
        raise PolicyInvalid([f"{p}: the policy file is empty"])
    _lines(node, (), lines, problems, p)
    if problems:
        raise PolicyInvalid(problems)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise PolicyInvalid([f"{p}:1: a policy is a mapping of keys (name:, repository:, ...)"])
    try:
        policy = PolicyFile.model_validate(data)
    except ValidationError as e:
        found = [_describe(err, p, lines) for err in e.errors()]
        raise PolicyInvalid(sorted(found, key=_line_of)) from None
    return Loaded(p, policy)


def _line_of(problem: str) -> int:
    parts = problem.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


def _lines(
    node: yaml.Node, at: Path_, lines: dict[Path_, int], problems: list[str], p: Path
) -> None:
    """The line of every key path (1-based); keys given twice are problems."""
    stack: list[tuple[yaml.Node, Path_]] = [(node, at)]
    while stack:
        n, here = stack.pop()
        lines.setdefault(here, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                key = str(k.value)
                if key in seen:
                    dotted = ".".join(str(x) for x in (*here, key))
                    problems.append(f"{p}:{k.start_mark.line + 1}: {dotted}: given twice")
                seen.add(key)
                lines[(*here, key)] = k.start_mark.line + 1
                stack.append((v, (*here, key)))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                stack.append((v, (*here, i)))


def _describe(err: Any, p: Path, lines: dict[Path_, int]) -> str:
    loc: Path_ = tuple(
        x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-"))
    )
    # The line of the key itself, else of the nearest key above it that is in the file.
    line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), 1)
    key = ".".join(str(x) for x in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"
        return f"{p}:{line}: {key}: unknown key{hint}"
    if kind == "missing":
        return f"{p}:{line}: {key}: missing (required)"
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    got = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        msg = f"{got!r} is not allowed here (expected {_pattern_words(loc)})"
    elif kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        how = "at least" if kind == "greater_than_equal" else "more than"
        msg = f"must be {how} {bound}, not {got!r}"
    elif kind in _TYPE_WORDS:
        msg = f"must be {_TYPE_WORDS[kind]}, not {got!r}"
    elif kind == "literal_error":
        msg = f"must be one of {ctx.get('expected', '')}, not {got!r}"
    return f"{p}:{line}: {key}: {msg}" if key else f"{p}:{line}: {msg}"


_TYPE_WORDS = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "string_type": "text",
    "list_type": "a list",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
    "bool_parsing": "true or false",
    "too_short": "a list of at least one",
}


def _known_keys(loc: Path_) -> list[str]:
    model: type[BaseModel] | None = PolicyFile
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        model = _model_of(field.annotation) if field is not None else None
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


_PATTERN_WORDS = {
    "name": "letters, digits, '.', '_' or '-', at most 64",
    "read_data_subset": "a percentage like 10%",
    "webhooks": "an http:// or https:// URL",
    "endpoint": "an http:// or https:// URL",
}


def _pattern_words(loc: Path_) -> str:
    for part in reversed(loc):
        if isinstance(part, str) and part in _PATTERN_WORDS:
            return _PATTERN_WORDS[part]
    return "another form"
