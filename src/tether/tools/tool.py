"""`Tool` and `@tool`: a typed Python function the model can call.

The JSON schema of a tool's arguments comes from the function's signature (through a pydantic
model built from it) and the per-parameter descriptions from a Google-style `Args:` section of its
docstring. `Tool.run` validates the model's arguments against that model, calls the function, and
turns the return value into the text the model sees.

What a stop does to a running tool depends on its kind:
- an async function is cancelled at its next `await`;
- a sync function runs in a worker thread. Python cannot kill a thread, so on a stop the thread is
  abandoned: it runs on to its end, and its result is discarded;
- `isolation="process"` runs the function in a child process, which is terminated (then killed)
  on a stop. See `tether.tools.process`.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args, overload

import anyio.to_thread
import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict

from tether.errors import UserError
from tether.models.base import ToolSpec
from tether.tools.process import run_in_process, serve

if TYPE_CHECKING:
    from tether.context import RunContext

__all__ = ["Isolation", "Tool", "ToolArgumentsError", "tool", "tool_result_text"]

Isolation = Literal["thread", "process"]

# The prefix of the pydantic field that holds a parameter; the parameter's own name is the field's
# alias. This keeps parameter names such as `json` or `copy` from shadowing `BaseModel` methods.
_FIELD_PREFIX = "p_"
# The longest argument text quoted in a `ToolArgumentsError`.
_QUOTE_LIMIT = 300


class ToolArgumentsError(UserError):
    """The model called a tool with arguments that are not valid JSON or do not fit its schema.

    The agent turns it into an error result, so the model sees the message and can retry.

    Attributes:
        tool_name: The tool that was called.
        arguments: The arguments as the model sent them.
    """

    def __init__(self, message: str, *, tool_name: str, arguments: str | Mapping[str, Any]):
        super().__init__(message)
        self.tool_name = tool_name
        self.arguments = arguments


class Tool:
    """A function the model can call, with the JSON schema of its arguments.

    Build one with `@tool` (or `Tool(fn, ...)`). Calling the tool object calls the function
    directly; `run()` is what the agent uses.

    Args:
        fn: A sync or async function whose parameters are annotated with types pydantic knows.
        name: The tool's name for the model; by default the function's name.
        description: What the tool does; by default the docstring's text before its sections.
        isolation: `"thread"` (default): sync functions run in a worker thread, abandoned on a
            stop. `"process"`: the function runs in a child process that is killed on a stop; it
            must be defined at module level, and its arguments and result must be JSON.
        requires_approval: An agent pauses its run before calling this tool, until a person
            approves, rejects or edits the call (see `tether.agent.approval`).

    Raises:
        UserError: a parameter is `*args`/`**kwargs`, the isolation is unknown, or a process
            tool is not defined at module level.
    """

    requires_approval: bool = False  # (subclasses that skip __init__, like MCP tools, get this)

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        isolation: Isolation = "thread",
        requires_approval: bool = False,
    ) -> None:
        if not callable(fn):
            raise UserError(f"a tool wraps a function, not {fn!r}")
        if isolation not in get_args(Isolation):
            raise UserError(f"isolation {isolation!r} is not one of 'thread', 'process'")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.name):
            raise UserError(
                f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'; pass name=..."
            )
        self.isolation: Isolation = isolation
        if not isinstance(requires_approval, bool):
            raise UserError(f"requires_approval must be True or False, not {requires_approval!r}")
        self.requires_approval = requires_approval
        summary, param_docs = _parse_docstring(inspect.getdoc(fn) or "")
        self.description = description if description is not None else summary
        self._signature = inspect.signature(fn)
        self._args_model = _arguments_model(fn, self.name, self._signature, param_docs)
        self.is_async = inspect.iscoroutinefunction(fn)
        if isolation == "process":
            qualname = getattr(fn, "__qualname__", "")
            if "<" in qualname or not getattr(fn, "__module__", None):
                raise UserError(
                    f"process tool {self.name!r} is {qualname!r}, which a child process cannot "
                    "import; define it at module level"
                )
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, isolation={self.isolation!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, bypassing validation and isolation."""
        return self.fn(*args, **kwargs)

    @functools.cached_property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments (an object schema)."""
        schema = self._args_model.model_json_schema(by_alias=True)
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("properties", {})
        return schema

    @property
    def spec(self) -> ToolSpec:
        """What the model is told about this tool."""
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def validate(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """Check the model's arguments; return them as keyword arguments of the function.

        Args:
            arguments: The JSON text the model produced (`""` means no arguments), or a dict.

        Raises:
            ToolArgumentsError: the text is not a JSON object, or does not fit the schema.
        """
        validated = self._validated(arguments)
        return {
            name: getattr(validated, _FIELD_PREFIX + name) for name in self._signature.parameters
        }

    def json_arguments(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """The validated arguments as plain JSON values (what a process tool's child receives).

        Raises:
            ToolArgumentsError: as `validate`.
        """
        return self._validated(arguments).model_dump(mode="json", by_alias=True, exclude_unset=True)

    def _validated(self, arguments: str | Mapping[str, Any]) -> BaseModel:
        if isinstance(arguments, str):
            try:
                data = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise ToolArgumentsError(
                    f"tool {self.name!r} got arguments that are not JSON: "
                    f"{_quote(arguments)} ({exc}); send a JSON object that fits its schema",
                    tool_name=self.name,
                    arguments=arguments,
                ) from None
        else:
            data = arguments
        if not isinstance(data, Mapping):
            raise ToolArgumentsError(
                f"tool {self.name!r} got arguments {_quote(data)}; send a JSON object",
                tool_name=self.name,
                arguments=arguments,
            )
        try:
            return self._args_model.model_validate(dict(data))
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}"
                for err in exc.errors(include_url=False)
            )
            raise ToolArgumentsError(
                f"tool {self.name!r} got invalid arguments {_quote(data)}: {problems}; its "
                f"parameters are {json.dumps(self.parameters.get('properties', {}))}",
                tool_name=self.name,
                arguments=arguments,
            ) from None

    async def run(
        self, arguments: str | Mapping[str, Any], *, ctx: RunContext | None = None
    ) -> str:
        """Validate the arguments, call the function, and return its result as text.

        `ctx` is the calling run's context; a function tool ignores it (an MCP tool streams its
        progress through it).

        A `str` result is returned as is; anything else is converted to JSON. An exception the
        function raises propagates unchanged (from a process tool: a `ToolProcessError`).

        Raises:
            ToolArgumentsError: the arguments are not valid; the function was not called.

        Cancellation:
            - async function: cancelled at its next `await`;
            - sync function: its worker thread is abandoned; it runs to its end in the
              background and its result is discarded (Python cannot kill a thread);
            - `isolation="process"`: the child process is terminated, killed if it does not exit
              within a short deadline, and reaped before the cancellation propagates.
        """
        if self.isolation == "process":
            return await run_in_process(self, self.json_arguments(arguments))
        kwargs = self.validate(arguments)
        if self.is_async:
            result = await self.fn(**kwargs)
        else:
            result = await anyio.to_thread.run_sync(
                functools.partial(self.fn, **kwargs), abandon_on_cancel=True
            )
            if inspect.isawaitable(result):  # e.g. a partial of an async function
                result = await result
        return tool_result_text(result)

    def run_here(self, arguments: str | Mapping[str, Any]) -> str:
        """Validate and call the function in this thread, blocking (a process tool's child uses
        it); async functions run on a fresh event loop."""
        kwargs = self.validate(arguments)
        if self.is_async:
            result = anyio.run(functools.partial(self.fn, **kwargs))
        else:
            result = self.fn(**kwargs)
        return tool_result_text(result)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    isolation: Isolation = "thread",
    requires_approval: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    isolation: Isolation = "thread",
    requires_approval: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a `Tool` from a typed function: `@tool` or `@tool(name=..., isolation=...)`.

    `@tool(requires_approval=True)` makes an agent ask a person before each call.

    Example:
        ```python
        @tool
        def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
            \"\"\"Get the current weather.

            Args:
                city: The city, e.g. "Paris".
                unit: The temperature unit.
            \"\"\"
        ```
    """

    def decorate(fn: Callable[..., Any]) -> Tool:
        return Tool(
            fn,
            name=name,
            description=description,
            isolation=isolation,
            requires_approval=requires_approval,
        )

    return decorate(fn) if fn is not None else decorate


def tool_result_text(value: Any) -> str:
    """The text the model sees for a tool's return value: a `str` as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value, fallback=repr).decode()


def _arguments_model(
    fn: Callable[..., Any],
    tool_name: str,
    signature: inspect.Signature,
    param_docs: dict[str, str],
) -> type[BaseModel]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError and friends from unresolvable annotations
        raise UserError(
            f"the annotations of tool {tool_name!r} cannot be resolved ({exc!r}); import the "
            "types they name at module level"
        ) from exc
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise UserError(
                f"tool {tool_name!r} has the parameter {str(param)!r}; a tool takes named "
                "parameters only"
            )
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise UserError(
                f"tool {tool_name!r} has the positional-only parameter {param.name!r}; drop the '/'"
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        extra: dict[str, Any] = {}
        if param.name in param_docs:  # else keep a description from `Annotated[..., Field()]`
            extra["description"] = param_docs[param.name]
        fields[_FIELD_PREFIX + param.name] = (
            annotation,
            pydantic.Field(default, alias=param.name, **extra),
        )
    model: type[BaseModel] = pydantic.create_model(
        f"{tool_name}_arguments",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
        **fields,
    )
    return model


_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?|"
    r"Attributes|Cancellation|See Also|Warnings?):\s*$"
)
_ARG_LINE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and the `Args:` descriptions of a docstring."""
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        header = _SECTION.match(stripped) if not line.startswith((" ", "\t")) else None
        if header:
            section, current, arg_indent = header.group(1), None, None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in ("Args", "Arguments", "Parameters", "Params") or not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(stripped)
        if match and (arg_indent is None or indent <= arg_indent):
            arg_indent = indent
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {stripped}".strip()
    return "\n".join(summary).strip(), params


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT] + "…"


def child_main() -> None:
    """The entry point of a process tool's child (`tether.tools.process`): run one call."""
    serve(lambda target, arguments: _as_tool(target).run_here(arguments))


def _as_tool(target: Any) -> Tool:
    return target if isinstance(target, Tool) else Tool(target)
