"""The typer application that every command module registers on."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from videomolmo.errors import VideoMolmoError

app = typer.Typer(
    name="videomolmo",
    help="VideoMolmo: ground natural-language queries in video by pointing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _print_version(value: bool) -> None:
    if value:
        import videomolmo

        typer.echo(f"videomolmo {videomolmo.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """VideoMolmo: ground natural-language queries in video by pointing."""


# Markup off: printed text quotes paths, queries and commands whose square brackets are data.
# Styled output builds `rich.text.Text` explicitly.
console = Console(markup=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable)


def console_error(message: str) -> None:
    # One line, no traceback: the message names the file and the problem. The message is printed
    # as plain text: it quotes paths and commands (`videomolmo[serve]`, `clip[1].mp4`) whose
    # square brackets rich would otherwise eat as markup.
    err_console.print(Text.assemble(("error:", "bold red"), " ", " ".join(str(message).splitlines())),
                      highlight=False, soft_wrap=True)


def handles_errors(fn: F) -> F:
    """Turn `VideoMolmoError` raised inside a command into a one-line error and exit code 2.

    typer's standalone mode would otherwise print a traceback before `main` sees the error.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VideoMolmoError as exc:
            console_error(str(exc))
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def command(*args, **kwargs):
    """`@command()` = `@app.command()` plus the bad-input handling every command needs."""

    def decorator(fn: F) -> F:
        return app.command(*args, **kwargs)(handles_errors(fn))

    return decorator

