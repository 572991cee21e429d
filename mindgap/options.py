"""Command-line flags generated from option groups, so that each option is declared once.

An option group is a pydantic model whose fields carry their documentation
(``Field(description=...)``), choices (``Literal``) and bounds. :func:`command_options`
turns the fields of each group into typer flags of a command (``max_steps`` ->
``--max-steps``, booleans ``--x/--no-x``, lists repeatable) and hands the command one
validated model per group. A value the model rejects ends the command with a one-line
``error: --flag: reason`` and exit status 2, like any other usage error.

Settings groups (pydantic-settings ``BaseSettings``) are read from the environment; their
flags default to unset, and a given flag overrides the environment variable.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from mindgap.jsonl import first_error

ReturnT = TypeVar("ReturnT")


@dataclass(frozen=True)
class Flags:
    """Which fields of an option group become flags, and how their names start."""

    model: type[BaseModel]
    only: tuple[str, ...] | None = None
    prefix: str = ""

    def fields(self) -> dict[str, FieldInfo]:
        """The group's exposed fields by field name."""
        every = self.model.model_fields
        names = self.only if self.only is not None else tuple(every)
        return {name: every[name] for name in names}

    def flag_name(self, field: str) -> str:
        """The command parameter (and, dashed, the flag) of a field."""
        return self.prefix + field


def _as_flags(group: type[BaseModel] | Flags) -> Flags:
    return group if isinstance(group, Flags) else Flags(group)


def env_name(model: type[BaseModel], field: str) -> str | None:
    """The environment variable of a settings field (None for plain option groups)."""
    if not issubclass(model, BaseSettings):
        return None
    return (str(model.model_config.get("env_prefix", "")) + field).upper()


def field_default(info: FieldInfo) -> Any:
    """A field's default value, calling its factory if it has one."""
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def _help(model: type[BaseModel], field: str, info: FieldInfo) -> str:
    text = info.description or ""
    env = env_name(model, field)
    if env is None:
        return text
    return f"{text} [env {env}; default {field_default(info)!r}]"


def _typer_type(annotation: Any) -> tuple[Any, str | None]:
    """What typer parses a field as, and its metavar.

    Booleans and lists keep their types (``--x/--no-x``, repeatable flags); every other value
    reaches pydantic as text, so that a rejected value (not a number, not a choice, out of
    bounds) gets the same one-line error.
    """
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else annotation
    if base is bool or typing.get_origin(base) is list:
        return annotation, None
    if typing.get_origin(base) is typing.Literal:
        return str, "[" + "|".join(str(a) for a in typing.get_args(base)) + "]"
    return str, {"str": "TEXT"}.get(base.__name__, base.__name__.upper())


def _parameter(flags: Flags, field: str, info: FieldInfo) -> inspect.Parameter:
    """The typer parameter of one field."""
    settings = issubclass(flags.model, BaseSettings)
    annotation, metavar = _typer_type(info.annotation)
    if settings or field_default(info) is None:
        annotation = annotation | None
    required = info.is_required() and not settings
    default: Any = (inspect.Parameter.empty if required
                    else None if settings else field_default(info))
    if annotation is str or annotation == str | None:
        default = default if default is None or default is inspect.Parameter.empty \
            else str(default)
    flag = "--" + flags.flag_name(field).replace("_", "-")
    if annotation is bool or annotation == bool | None:
        flag = f"{flag}/--no-{flag[2:]}"
    option = typer.Option(flag,
                          help=_help(flags.model, field, info), metavar=metavar,
                          show_default=not settings)
    return inspect.Parameter(flags.flag_name(field), inspect.Parameter.KEYWORD_ONLY,
                             default=default, annotation=Annotated[annotation, option])


def fail(message: str) -> typing.NoReturn:
    """End the command with a one-line error and exit status 2 (a usage error)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _build(flags: Flags, given: dict[str, Any]) -> BaseModel:
    """Validate one group from its flags' values; a rejected value ends the command."""
    settings = issubclass(flags.model, BaseSettings)
    values = {k: v for k, v in given.items() if not (settings and v is None)}
    try:
        return flags.model(**values)
    except ValidationError as exc:
        field, message = first_error(exc)
        message = message.removeprefix("Value error, ")
        if field in flags.fields():
            fail(f"--{flags.flag_name(field).replace('_', '-')}: {message}")
        fail(message)


def command_options(**groups: type[BaseModel] | Flags
                    ) -> Callable[[Callable[..., ReturnT]], Callable[..., ReturnT]]:
    """Replace the parameters named by ``groups`` with their groups' fields as flags.

    The command keeps its other parameters; each named parameter receives the validated
    model of its group.
    """
    specs = {name: _as_flags(group) for name, group in groups.items()}

    def decorate(command: Callable[..., ReturnT]) -> Callable[..., ReturnT]:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(command).parameters.values() if p.name not in specs]
        generated = [_parameter(spec, field, info) for spec in specs.values()
                     for field, info in spec.fields().items()]
        names = [p.name for p in own + generated]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise TypeError(f"{command.__name__}: flags declared twice: {clashes}")

        @functools.wraps(command)
        def run(**kwargs: Any) -> ReturnT:
            for name, spec in specs.items():
                given = {field: kwargs.pop(spec.flag_name(field)) for field in spec.fields()}
                kwargs[name] = _build(spec, given)
            return command(**kwargs)

        parameters = generated + own
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in parameters])
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        del run.__wrapped__  # typer must read the generated signature, not the command's
        return run

    return decorate


def to_flags(options: BaseModel) -> list[str]:
    """The flags that give ``options`` to a command built from its group: one per field whose
    value is not the default (``--x v``, ``--x/--no-x``, a list's flag once per item)."""
    flags: list[str] = []
    for field, info in type(options).model_fields.items():
        value = getattr(options, field)
        if value == field_default(info) or value is None:
            continue
        flag = "--" + field.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            flags.extend(part for item in value for part in (flag, str(item)))
        else:
            flags.extend([flag, str(value)])
    return flags
