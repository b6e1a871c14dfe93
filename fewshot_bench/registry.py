"""One name -> factory mechanism for suites, learners, backbones and datasets.

Names may carry keyword arguments, as in VTAB's task strings:
``"clevr(task='count_all')"`` resolves the factory ``clevr`` and calls it with
``task='count_all'`` (values are Python literals).

A name resolves in three ways:

- a registered name (``linear_probe``), registered with :meth:`Registry.register`;
- an import path, ``my_pkg.my_module:MyLearner``;
- an entry point of an installed package in the registry's group (for
  learners ``fewshot_bench.learners``, for backbones ``fewshot_bench.backbones``).

A built-in defined outside its registry's package (the backbone
``meta_trained`` lives with meta-training) is named with
:meth:`Registry.add_builtin_module`: its module is imported on first need, so
listing and resolving names never depend on what was imported before.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.metadata
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar

from fewshot_bench.errors import ConfigError

T = TypeVar("T")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name(a=1, b='x')"`` into ``("name", {"a": 1, "b": "x"})``."""
    text = spec.strip()
    if "(" not in text:
        return text, {}
    name, _, rest = text.partition("(")
    if ":" in name:  # an import path: parse the arguments with a placeholder name
        return name.strip(), parse_spec("f(" + rest)[1]
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


def first_doc_line(obj: Any) -> str:
    """The first non-blank line of ``obj``'s own docstring, stripped ("" if it has none)."""
    lines = [line.strip() for line in (getattr(obj, "__doc__", None) or "").splitlines()]
    return next((line for line in lines if line), "")


class Registry(Generic[T]):
    """Maps names to factories of one kind (``kind`` is used in messages)."""

    def __init__(self, kind: str, entry_point_group: Optional[str] = None,
                 required_methods: Sequence[str] = ()):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.required_methods = tuple(required_methods)
        self._factories: dict[str, Callable[..., T]] = {}
        self._origins: dict[str, str] = {}
        self._builtin_modules: list[str] = []  # not imported yet; see add_builtin_module
        self._entry_points_loaded = False

    def register(self, name: str, origin: Optional[str] = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            where = origin or f"built-in ({getattr(factory, '__module__', '?')})"
            if name in self._factories and self._factories[name] is not factory:
                raise ConfigError(f"{self.kind} {name!r} is claimed twice: by {self._origins[name]} and by "
                                  f"{where}; uninstall or rename one of them")
            self._factories[name] = factory
            self._origins[name] = where
            return factory
        return decorator

    def add_builtin_module(self, module: str) -> None:
        """Name a module whose import registers more built-ins; it is imported on first need.

        For a built-in whose module would be a heavy or circular import where the
        registry's package is imported (``meta_trained`` is in the learners package).
        """
        self._builtin_modules.append(module)

    def _load_on_first_need(self) -> None:
        """Import the pending built-in modules, then register the entry points of installed packages.

        Both happen on first need (listing names, or a name not registered yet);
        built-ins come first, so a plugin that claims a built-in's name is refused.
        """
        while self._builtin_modules:
            importlib.import_module(self._builtin_modules[0])  # a failed import stays pending (and raises again)
            self._builtin_modules.pop(0)
        if self._entry_points_loaded or not self.entry_point_group:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            dist = ep.dist.name if ep.dist is not None else "an installed package"
            origin = f"entry point {ep.value} of package {dist}"
            if ep.name in self._factories:
                raise ConfigError(f"{self.kind} {ep.name!r} is claimed twice: by {self._origins[ep.name]} "
                                  f"and by {origin}; uninstall or rename one of them")
            try:
                factory = ep.load()
            except Exception as e:  # noqa: BLE001 -- a broken plugin is named, not fatal for others
                raise ConfigError(f"{self.kind} plugin {ep.name!r} ({origin}) failed to import: "
                                  f"{type(e).__name__}: {e}") from e
            self.register(ep.name, origin)(self._checked(factory, origin))

    def _checked(self, factory: Any, where: str) -> Callable[..., T]:
        """Refuse a plugin that lacks a method of the interface, naming it."""
        missing = [m for m in self.required_methods if not callable(getattr(factory, m, None))]
        if isinstance(factory, type) and missing:
            raise ConfigError(f"{self.kind} {where} does not implement the {self.kind} interface: "
                              f"missing method {', '.join(missing)}")
        if not callable(factory):
            raise ConfigError(f"{self.kind} {where} is not a class or function")
        return factory

    def _import(self, path: str) -> Callable[..., T]:
        module_name, _, attribute = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # noqa: BLE001 -- any import failure is reported with the path tried
            raise ConfigError(f"{self.kind} {path!r}: importing module {module_name!r} failed: "
                              f"{type(e).__name__}: {e}") from e
        target: Any = module
        for part in attribute.split("."):
            if not hasattr(target, part):
                raise ConfigError(f"{self.kind} {path!r}: module {module_name!r} has no attribute {attribute!r}")
            target = getattr(target, part)
        return self._checked(target, f"{path!r}")

    def names(self) -> list[str]:
        self._load_on_first_need()
        return sorted(self._factories)

    def origin(self, name: str) -> str:
        """Where a registered name comes from (built-in module, entry point, import path)."""
        self.get(name)
        return self._origins.get(name, "import path")

    def description(self, name: str) -> str:
        """The first line of the docstring of the factory ``name`` resolves to ("" if it has none)."""
        return first_doc_line(self.get(name))

    def __contains__(self, name: str) -> bool:
        try:
            self.get(parse_spec(name)[0])
            return True
        except ConfigError:
            return False

    def make_configurable(self, spec: str) -> str:
        """Let gin bind the arguments of the factory ``spec`` names, wherever it comes from.

        Built-in factories are gin-configurable already; a plugin class (import
        path or entry point) is wrapped with ``gin.external_configurable`` under
        its own module and class name. Call before gin parses its bindings.
        Returns the gin selector to bind, e.g. ``my_pkg.my_module.MyLearner``.
        """
        import gin
        from gin import config as gin_config

        name = parse_spec(spec)[0]
        factory = self.get(name)
        known = gin_config._inverse_lookup(factory)  # gin 0.5: the Configurable of an object, or None
        if known is not None:
            return known.selector
        module = getattr(factory, "__module__", "plugin")
        selector = f"{module}.{factory.__name__}"
        try:  # registered with gin before, by another registry object of this process
            wrapped = gin.get_configurable(selector)
        except ValueError:
            wrapped = gin.external_configurable(factory, name=factory.__name__, module=module)
        self._factories[name] = wrapped
        self._origins.setdefault(name, "import path")
        return selector

    def get(self, name: str) -> Callable[..., T]:
        if ":" in name and name not in self._factories:
            return self._import(name)
        if name not in self._factories:
            self._load_on_first_need()
        try:
            return self._factories[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}.{hint} "
                              f"Valid {self.kind}s: {', '.join(self.names())} (or an import path "
                              f"module:Class, or a package's {self.entry_point_group or 'plugin'} entry point)"
                              ) from None

    def create(self, spec: str, **extra: Any) -> T:
        """Build the object named by ``spec``; ``extra`` adds keyword arguments."""
        name, kwargs = parse_spec(spec)
        factory = self.get(name)
        try:
            return factory(**kwargs, **extra)
        except TypeError as e:
            raise ConfigError(f"{self.kind} {spec!r}: {e}") from e
