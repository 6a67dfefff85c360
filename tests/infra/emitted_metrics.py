"""The metrics the code emits, read from its syntax tree: the name at each call that emits a metric, never a
name that only appears in text (a docstring, a comment, a log message) or in a constant nothing emits.

A call emits a metric when it is Powertools' `add_metric(name=...)` or `single_metric(name=...)`, or a call
of a function that passes one of its own parameters on as such a name (`streaming.counters.count`,
`streaming.telemetry.count`): then its argument in that place is the name, and, when that function takes
`**dimensions`, its other keywords are the metric's dimensions. The name is followed to where it comes from:
a literal, a module constant (`X_METRIC: Final = "X"`, in its module or imported), a local variable, an
entry of a module-level table (`_METRIC_BY_OUTCOME[outcome]`, `.get(status)`) or the loop over one
(telemetry's `for name, attribute in _TURN_METRICS`).
"""

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_POWERTOOLS_EMITTERS = frozenset({"add_metric", "single_metric"})


@dataclass(frozen=True)
class Emission:
    name: str
    dimensions: frozenset[str]


@dataclass(frozen=True)
class _Wrapper:
    position: int
    keyword: str
    parameters: frozenset[str]
    takes_dimensions: bool


@dataclass(frozen=True)
class _Module:
    path: Path
    tree: ast.Module
    constants: dict[str, ast.expr]


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    constants: dict[str, ast.expr] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = statement.value
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
            constants[statement.target.id] = statement.value
    return constants


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _calls_with_function(tree: ast.Module) -> Iterator[tuple[ast.Call, ast.FunctionDef | ast.AsyncFunctionDef | None]]:
    """Every call, with the innermost function it is in (None at module level)."""
    inside: dict[int, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for function in _functions(tree):
        for node in ast.walk(function):
            if isinstance(node, ast.Call):
                # ast.walk is breadth-first, so an inner function comes later and wins.
                inside[id(node)] = function
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, inside.get(id(node))


class _Resolver:
    def __init__(self, modules: list[_Module]) -> None:
        self._everywhere: dict[str, list[ast.expr]] = {}
        for module in modules:
            for name, value in module.constants.items():
                self._everywhere.setdefault(name, []).append(value)

    def names(
        self, expression: ast.expr, module: _Module, function: ast.FunctionDef | ast.AsyncFunctionDef | None
    ) -> set[str]:
        return self._resolve(expression, module, function, depth=0)

    def _resolve(
        self,
        expression: ast.expr,
        module: _Module,
        function: ast.FunctionDef | ast.AsyncFunctionDef | None,
        depth: int,
    ) -> set[str]:
        if depth > 8:
            return set()
        deeper = depth + 1
        match expression:
            case ast.Constant(value=str() as value):
                return {value}
            case ast.IfExp(body=body, orelse=orelse):
                return self._resolve(body, module, function, deeper) | self._resolve(orelse, module, function, deeper)
            case ast.Subscript(value=table):
                return self._table_values(table, module, deeper)
            case ast.Call(func=ast.Attribute(value=table, attr="get")):
                return self._table_values(table, module, deeper)
            case ast.Name(id=name):
                if function is not None:
                    local = self._local(name, function, module, deeper)
                    if local is not None:
                        return local
                found = [module.constants[name]] if name in module.constants else self._everywhere.get(name, [])
                return {value for node in found for value in self._resolve(node, module, None, deeper)}
        return set()

    def _table(self, expression: ast.expr, module: _Module) -> ast.expr | None:
        if isinstance(expression, ast.Dict | ast.Tuple | ast.List):
            return expression
        if isinstance(expression, ast.Name) and expression.id in module.constants:
            return self._table(module.constants[expression.id], module)
        return None

    def _table_values(self, expression: ast.expr, module: _Module, depth: int) -> set[str]:
        table = self._table(expression, module)
        if isinstance(table, ast.Dict):
            return {name for value in table.values for name in self._resolve(value, module, None, depth)}
        if isinstance(table, ast.Tuple | ast.List):
            return {name for value in table.elts for name in self._resolve(value, module, None, depth)}
        return set()

    def _local(
        self, name: str, function: ast.FunctionDef | ast.AsyncFunctionDef, module: _Module, depth: int
    ) -> set[str] | None:
        """What a local variable of `function` may hold; None when it is not one (a global or an import)."""
        parameters = {argument.arg for argument in (*function.args.posonlyargs, *function.args.args)}
        parameters |= {argument.arg for argument in function.args.kwonlyargs}
        if name in parameters:
            return set()  # a wrapper's parameter: its callers' arguments are the names
        found: set[str] | None = None
        for node in ast.walk(function):
            values: set[str] | None = None
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                values = self._resolve(node.value, module, function, depth)
            elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and isinstance(node.target, ast.Name):
                if node.target.id == name and node.value is not None:
                    values = self._resolve(node.value, module, function, depth)
            elif isinstance(node, ast.For | ast.AsyncFor):
                values = self._loop_values(name, node, module, function, depth)
            if values is not None:
                found = (found or set()) | values
        return found

    def _loop_values(
        self,
        name: str,
        loop: ast.For | ast.AsyncFor,
        module: _Module,
        function: ast.FunctionDef | ast.AsyncFunctionDef,
        depth: int,
    ) -> set[str] | None:
        table = self._table(loop.iter, module)
        if not isinstance(table, ast.Tuple | ast.List):
            return None
        if isinstance(loop.target, ast.Name) and loop.target.id == name:
            return {value for item in table.elts for value in self._resolve(item, module, None, depth)}
        if isinstance(loop.target, ast.Tuple):
            for index, target in enumerate(loop.target.elts):
                if isinstance(target, ast.Name) and target.id == name:
                    return {
                        value
                        for item in table.elts
                        if isinstance(item, ast.Tuple) and len(item.elts) > index
                        for value in self._resolve(item.elts[index], module, None, depth)
                    }
        return None


def _wrappers(modules: list[_Module]) -> dict[str, list[_Wrapper]]:
    """Functions that emit a metric named by one of their parameters, by function name."""
    wrappers: dict[str, list[_Wrapper]] = {}
    for module in modules:
        for function in _functions(module.tree):
            positional = [argument.arg for argument in (*function.args.posonlyargs, *function.args.args)]
            if positional[:1] in (["self"], ["cls"]):
                positional = positional[1:]
            named = frozenset(positional) | {argument.arg for argument in function.args.kwonlyargs}
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and _called_name(node) in _POWERTOOLS_EMITTERS:
                    name = _keyword(node, "name")
                    if isinstance(name, ast.Name) and name.id in positional:
                        wrappers.setdefault(function.name, []).append(
                            _Wrapper(positional.index(name.id), name.id, named, function.args.kwarg is not None)
                        )
    return wrappers


def emitted_metrics(paths: Iterable[Path]) -> list[Emission]:
    modules = []
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        modules.append(_Module(path, tree, _module_constants(tree)))
    resolver = _Resolver(modules)
    wrappers = _wrappers(modules)
    emissions: list[Emission] = []
    for module in modules:
        for call, function in _calls_with_function(module.tree):
            called = _called_name(call)
            if called in _POWERTOOLS_EMITTERS:
                name = _keyword(call, "name")
                if name is not None:
                    for metric in resolver.names(name, module, function):
                        emissions.append(Emission(metric, frozenset()))
                continue
            for wrapper in wrappers.get(called or "", []):
                keywords = {keyword.arg for keyword in call.keywords}
                if not wrapper.takes_dimensions and not keywords <= wrapper.parameters:
                    continue  # a same-named function this call cannot be calling (it takes no such keyword)
                argument = call.args[wrapper.position] if len(call.args) > wrapper.position else None
                argument = argument or _keyword(call, wrapper.keyword)
                if argument is None:
                    continue
                dimensions = frozenset(
                    keyword.arg
                    for keyword in call.keywords
                    if wrapper.takes_dimensions and keyword.arg is not None and keyword.arg not in wrapper.parameters
                )
                for metric in resolver.names(argument, module, function):
                    emissions.append(Emission(metric, dimensions))
    return emissions


def literal_arguments(paths: Iterable[Path], function_name: str) -> set[str]:
    """The string literals passed first to every call of `function_name` (count_error("tts") -> "tts")."""
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and _called_name(node) == function_name and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
    return found
