"""YAML as the federation file is read: YAML 1.2 scalars, and the line of every key."""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass, field

import yaml

from troupe.config.schema import canonical
from troupe.config.wording import Loc, Problem, key_of


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: on/off/yes/no stay words (scene `on:` keys), 010 is ten, 1:30 text."""


_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_constructor(
    _INT,
    lambda loader, node: (
        int(text, 16) if (text := loader.construct_scalar(node)).startswith("0x") else int(text)
    ),
)


@dataclass
class Where:
    """The line of one node of the file, and of the nodes under it by key or index."""

    line: int
    children: dict[object, Where] = field(default_factory=dict)

    def find(self, loc: Loc) -> int:
        """The line of the deepest node of `loc` present in the file."""
        node = self
        for part in loc:
            child = node.children.get(part)
            if child is None and isinstance(part, str):
                key = canonical(part)
                child = next(
                    (
                        c
                        for k, c in node.children.items()
                        if isinstance(k, str) and canonical(k) == key
                    ),
                    None,
                )
            if child is None:
                break
            node = child
        return node.line


def _walk(
    node: yaml.Node, loader: _Loader, loc: Loc, dupes: list[tuple[Loc, int, int]], seen: set[int]
) -> Where:
    where = Where(node.start_mark.line + 1)
    if id(node) in seen:
        raise yaml.MarkedYAMLError(
            problem="an alias (*name) refers to a node that contains it",
            problem_mark=node.start_mark,
        )
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        loader.flatten_mapping(node)
        owners: dict[object, bool] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue
            child = _walk(value_node, loader, (*loc, str(key)), dupes, seen)
            child.line = key_node.start_mark.line + 1
            is_own = id(key_node) in own
            if key in where.children and is_own and owners[key]:
                dupes.append(((*loc, str(key)), child.line, where.children[key].line))
            where.children[key] = child
            owners[key] = is_own
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            where.children[index] = _walk(item, loader, (*loc, index), dupes, seen)
    return where


def parse(text: str, file: str) -> tuple[object, Where, list[Problem]]:
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        what = err.reason
        if isinstance(err.character, int):
            what = f"character #x{err.character:04x} is not allowed"
        return None, Where(1), [Problem(file, line, "", f"not valid YAML: {what}.")]
    dupes: list[tuple[Loc, int, int]] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, Where(1), []
        where = _walk(node, loader, (), dupes, set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        detail = err.problem or "cannot parse"
        if err.context:
            detail = f"{detail} ({err.context})"
        return (
            None,
            Where(1),
            [Problem(file, mark.line + 1 if mark else None, "", f"not valid YAML: {detail}.")],
        )
    except yaml.YAMLError as err:
        return None, Where(1), [Problem(file, None, "", f"not valid YAML: {err}.")]
    finally:
        loader.dispose()
    problems = [
        Problem(file, line, key_of(loc), f"appears twice (first on line {first}); keep one.")
        for loc, line, first in dupes
    ]
    return data, where, problems
