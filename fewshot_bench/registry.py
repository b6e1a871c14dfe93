"""One name -> factory mechanism for suites, learners, backbones and datasets.

Names may carry keyword arguments, as in VTAB's task strings:
``"clevr(task='count_all')"`` resolves the factory ``clevr`` and calls it with
``task='count_all'`` (values are Python literals).
"""

from __future__ import annotations

import ast
import difflib
from typing import Any, Callable, Generic, TypeVar

from fewshot_bench.errors import ConfigError

T = TypeVar("T")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name(a=1, b='x')"`` into ``("name", {"a": 1, "b": "x"})``."""
    text = spec.strip()
    if "(" not in text:
        return text, {}
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise ConfigError(f"cannot parse {spec!r}: expected name(key=value, ...)") from e
    if not isinstance(node, ast.Call) or node.args or not isinstance(node.func, (ast.Name, ast.Attribute)):
        raise ConfigError(f"cannot parse {spec!r}: expected name(key=value, ...) with keyword arguments only")
    kwargs = {}
    for kw in node.keywords:
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except ValueError as e:
            raise ConfigError(f"in {spec!r}: the value of {kw.arg!r} must be a Python literal") from e
    return ast.unparse(node.func), kwargs


class Registry(Generic[T]):
    """Maps names to factories of one kind (``kind`` is used in messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and self._factories[name] is not factory:
                raise ConfigError(f"{self.kind} {name!r} is registered twice "
                                  f"({self._factories[name]!r} and {factory!r})")
            self._factories[name] = factory
            return factory
        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return parse_spec(name)[0] in self._factories

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}.{hint} "
                              f"Valid {self.kind}s: {', '.join(self.names())}") from None

    def create(self, spec: str, **extra: Any) -> T:
        """Build the object named by ``spec``; ``extra`` adds keyword arguments."""
        name, kwargs = parse_spec(spec)
        factory = self.get(name)
        try:
            return factory(**kwargs, **extra)
        except TypeError as e:
            raise ConfigError(f"{self.kind} {spec!r}: {e}") from e
