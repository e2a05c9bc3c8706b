"""Every YAML input (spec files, mergekit configs, run configs, benchmarks, suites) is read here, and
what would stall or explode later is refused at once with one message naming the file and limit.

PyYAML keeps an alias (`*a`) as a shared reference to its anchor (`&a`), so a document of nested
aliases ("billion laughs") loads in milliseconds but expands to billions of values as soon as
anything walks it (a JSON schema, pydantic, json.dumps). The loader counts, while composing, the
values each node expands to and stops at MAX_NODES; it reads at most MAX_BYTES and composes at most
MAX_DEPTH levels deep (PyYAML's composer recurses).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from mergeeval.errors import InputError

MAX_BYTES = 4 * 2**20  # the project's own YAML files are 10 KB at most
MAX_NODES = 100_000  # values, each alias counted at its full size; the config schema has ~700
MAX_DEPTH = 100  # nesting levels; the project's files nest fewer than 10

Error = Callable[[str], Exception]


class _Limit(Exception):
    pass


def load_yaml(path: Path | str, what: str, error: Error = InputError, syntax: str = "YAML"):
    """The one YAML document in `path`; `what` names it in messages ("spec file"), and any problem
    (too large, not UTF-8, not valid YAML, over a limit) raises `error(message)`."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise error(
            f"{what} {path} is larger than {MAX_BYTES // 2**20} MiB, the limit for a YAML input "
            "(mergeeval.yamlio.MAX_BYTES); the project's YAML files are a few KB: check the path"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text ({e})") from None
    return load_yaml_text(text, f"{what} {path}", error, syntax)


def load_yaml_text(text: str, source: str, error: Error = InputError, syntax: str = "YAML"):
    """The one YAML document in `text`; `source` names it in messages ("spec file a.yaml")."""
    if len(text) > MAX_BYTES:  # characters: at most the bytes of a file that load_yaml read
        raise error(f"{source} is larger than the YAML input limit of {MAX_BYTES} characters")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except _Limit as e:
        raise error(f"{source} {e}") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an integer of over 4300 digits
        raise error(f"{source} is not valid {syntax}: {' '.join(str(e).split())}") from None
    finally:
        loader.dispose()


def check_loaded(obj, source: str, error: Error = InputError) -> None:
    """Refuse a document loaded elsewhere (Snakemake's `--configfile`) that has more than MAX_NODES
    values, counting a shared reference (an alias) each time it appears; stops at the limit."""
    count, stack = 1, [obj] if isinstance(obj, (dict, list, tuple)) else []
    while stack:
        x = stack.pop()
        kids = [*x.keys(), *x.values()] if isinstance(x, dict) else x
        count += len(kids)
        if count > MAX_NODES:
            raise error(f"{source} {_too_many()}")
        stack.extend(k for k in kids if isinstance(k, (dict, list, tuple)))


def _too_many() -> str:
    return (
        f"has more than {MAX_NODES} values, each alias (*name) counted at its full size: the "
        "limit for a YAML input (mergeeval.yamlio.MAX_NODES); write the values out or use fewer "
        "nested aliases"
    )


class _Loader(yaml.SafeLoader):
    """SafeLoader that sizes every node as it is composed: 1 + its children's sizes, an alias
    the size of its anchor's node."""

    def __init__(self, stream):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self._depth = 0

    def compose_node(self, parent, index):
        alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limit(
                f"nests deeper than {MAX_DEPTH} levels, the limit for a YAML input "
                "(mergeeval.yamlio.MAX_DEPTH)"
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if alias:
            size = self._sizes.get(id(node))
            if size is None:  # an alias inside its own anchor
                raise _Limit("has an alias inside its own anchor (a recursive document)")
        else:
            if isinstance(node, yaml.MappingNode):
                kids = [n for pair in node.value for n in pair]
            else:
                kids = node.value if isinstance(node, yaml.SequenceNode) else []
            size = 1 + sum(self._sizes[id(k)] for k in kids)
            self._sizes[id(node)] = size
        if size > MAX_NODES:
            raise _Limit(_too_many())
        return node
