"""YAML loading that remembers the line of every value, for errors that point into the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass
class Document:
    """One YAML document with a map from value paths to 1-based line numbers."""

    data: Any
    start_line: int
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.start_line


def _construct(node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            lines[(*path, name)] = key_node.start_mark.line + 1
            out[name] = _construct(value_node, (*path, name), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, (*path, i), lines) for i, child in enumerate(node.value)]
    # Scalars: let the safe constructor resolve ints, bools, nulls as kubectl would.
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def load_documents(text: str) -> list[Document]:
    """Parse every document of a YAML stream, skipping empty ones."""
    docs: list[Document] = []
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if node is None:
            continue
        lines: dict[Path, int] = {}
        data = _construct(node, (), lines)
        if data is None:
            continue
        docs.append(Document(data=data, start_line=node.start_mark.line + 1, lines=lines))
    return docs
