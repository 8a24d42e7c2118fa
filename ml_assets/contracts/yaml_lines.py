"""YAML with line numbers: what a contract and a features file need to name the line at fault.

Both are written by hand and validated by pydantic, whose errors say *where* in the data
(``loc``: a path of keys and list indexes) but not on which line. So a document is read twice:
composed (every node keeps its start mark) and loaded (the plain data pydantic validates). The
composed tree gives the 1-based line of every path (:func:`line_index`); :func:`line_for` finds
the line of a pydantic ``loc``, walking up to the nearest path the YAML has (pydantic's loc can
go deeper, e.g. into a union branch). :func:`load_yaml` does both reads and turns a YAML syntax
error into the ``file:line: not valid YAML: ...`` message; :func:`pydantic_problems` lists the
errors of a failed validation as (loc, message).

One module for both loaders: the contract's (:mod:`ml_assets.contracts.model`) and the
features file's (:mod:`ml_assets.features.spec`). No Dagster here: the serving Bento loads both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import yaml
from pydantic import ValidationError

Lines = dict[tuple, int]
"""1-based line by YAML path (a tuple of mapping keys and sequence indexes; () is the root)."""


def load_yaml(text: str, origin: str, error: type[Exception]) -> tuple[yaml.Node | None, Any]:
    """(composed document, loaded data) of ``text``; a syntax error raises ``error``.

    The message is ``{origin}:{line}: not valid YAML: {problem}`` (without the line when the
    parser does not know it). An empty document gives (None, None).
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(yaml_error_message(exc, origin)) from exc
    return node, data


def yaml_error_message(exc: yaml.YAMLError, origin: str) -> str:
    """``{origin}:{line}: not valid YAML: {problem}`` for a YAML parse error."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{origin}:{mark.line + 1}" if mark else origin
    return f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"


def _paths(node: yaml.Node, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple, int]]:
    """Yield (path, 1-based line) for every node of a composed YAML document.

    A mapping entry's path is at its key's line (not its value's, which may start below).
    """
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, key_node.value)
            yield sub, key_node.start_mark.line + 1
            for p, line in _paths(value_node, sub):
                if p != sub:
                    yield p, line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _paths(item, (*path, i))


def line_index(node: yaml.Node | None) -> Lines:
    """The line of every path of a composed document (empty for an empty document)."""
    return dict(_paths(node)) if node is not None else {}


def _keep_all(part: Any) -> bool:
    return False


def line_for(
    lines: Lines,
    loc: tuple[Any, ...],
    *,
    skip: Callable[[Any], bool] = _keep_all,
    as_text: bool = False,
) -> int | None:
    """The line of a pydantic ``loc``: of its longest prefix the YAML has, else of the root.

    What differs between documents is passed in: ``skip`` drops loc parts the YAML has no level
    for (a contract's ``function-...`` validator parts, a features file's union tags);
    ``as_text`` turns every part but an int into text, as YAML mapping keys are.
    """
    loc = tuple(str(x) if as_text and not isinstance(x, int) else x for x in loc if not skip(x))
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def pydantic_problems(
    exc: ValidationError, located: type[Exception] | None = None
) -> list[tuple[tuple[Any, ...], str]]:
    """(loc, message) of every error of a failed validation, without pydantic's
    ``"Value error, "`` prefix.

    ``located``: an exception type whose instances carry a ``loc`` relative to the model that
    raised them (a cross-field check pointing at the field at fault); such a cause's ``loc`` is
    appended to the error's. With ``located`` given, a cause carrying ``problems`` (a list of
    (loc, message), several rules broken at once) gives one entry per problem.
    """
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        cause = err.get("ctx", {}).get("error")
        many = getattr(cause, "problems", None)
        if located is not None and isinstance(many, list):
            # several rules broken at once: one entry each, at the field it names
            out += [((*loc, *sub), message) for sub, message in many]
            continue
        if located is not None and isinstance(cause, located):
            loc = (*loc, *cause.loc)  # type: ignore[attr-defined]
        out.append((loc, err["msg"].removeprefix("Value error, ")))
    return out
