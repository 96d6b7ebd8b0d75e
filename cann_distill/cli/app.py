"""The Typer app, its help panels and shared options, and `invoke`: one `Error: ...` line and a fixed exit code
for every failure (0 done, 1 a stage failed, 2 bad recipe or usage). Nothing here imports torch."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any, Callable, List, Optional, Sequence

import typer
from typer.core import TyperCommand, TyperGroup
from typing_extensions import Annotated

from cann_distill.core.errors import CannDistillError, cut
from cann_distill.core.version import __version__
from cann_distill.runtime.terminal import ui

PIPELINE, INSPECT, TOOLS = "Pipeline", "Inspect", "Tools"
RECIPE_FLAGS = "Recipe flags (override the recipe; without one, the packaged default)"

_TYPES: dict[Any, str] = {int: "INTEGER", float: "NUMBER", str: "TEXT"}


def _metavar(param: Any) -> str:
    """Help's type column in words (TEXT, PATH, nothing for a flag) instead of Typer's `<bool>` / `<list[str]>`."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if getattr(param, "is_flag", False) or annotation is bool:
        return ""
    inner = getattr(annotation, "__args__", None) or (annotation,)  # List[str] -> str
    if getattr(inner[0], "__name__", "") in ("Path", "PosixPath", "WindowsPath"):
        return "PATH"
    return _TYPES.get(inner[0], str(param.name or "value").upper())


class _CleanHelp:
    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if param.param_type_name == "argument":
                param.metavar = param.metavar or (param.name or "value").upper()
                param.display_type_rich = lambda ctx: None  # the name says it; no `<str>` column
            elif param.metavar is None:
                param.metavar = _metavar(param)
        return params


class Command(_CleanHelp, TyperCommand):
    pass


class Group(_CleanHelp, TyperGroup):
    """The root command: usage errors (unknown command or option, missing argument) are one `Error:` line, exit 2;
    help lists the commands by panel, pipeline first."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        order = (PIPELINE, INSPECT, TOOLS)
        panel = {n: getattr(self.commands[n], "rich_help_panel", None) for n in names}
        return sorted(names, key=lambda n: order.index(panel[n]) if panel[n] in order else len(order))

    def main(
        self,
        args: Optional[Sequence[str]] = None,
        prog_name: Optional[str] = None,
        complete_var: Optional[str] = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def call(standalone: bool) -> Any:
            return super(Group, self).main(args, prog_name, complete_var, standalone, windows_expand_args, **extra)

        if not standalone_mode:
            return call(False)
        try:
            code = call(False)
        except Exception as exc:  # click's exceptions, vendored or not depending on the Typer version: matched by shape
            if type(exc).__name__ == "Abort" or isinstance(exc, typer.Abort):
                print("Error: aborted", file=sys.stderr)
                sys.exit(1)
            if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]
                sys.exit(exc.exit_code)  # type: ignore[attr-defined]
            ctx = getattr(exc, "ctx", None)
            where = f" (`{ctx.command_path} --help` shows the usage)" if ctx is not None else ""
            print(f"Error: {cut(exc.format_message(), 400)}{where}", file=sys.stderr)  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="cann-distill",
    cls=Group,
    help="Distill a timm teacher into a small student and prove it deploys: INT8 ONNX, measured accuracy and latency.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def command(name: str, panel: str, help: str, example: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command in its help panel; its help ends with the example."""
    return app.command(name, cls=Command, help=help, epilog=f"Example: {example}", rich_help_panel=panel)


RecipeArg = Annotated[
    Optional[str],
    typer.Argument(
        help="Recipe: a YAML file or a packaged recipe's name (`cann-distill list recipes`); default: the packaged default recipe.",
        show_default=False,
        metavar="RECIPE",
    ),
]
RunDirOpt = Annotated[
    Optional[str], typer.Option("--run-dir", help="Run directory (default: recipe's run_dir, else runs/<name>).", metavar="DIR")
]
NoBudgetCheckOpt = Annotated[
    bool,
    typer.Option(
        "--no-budget-check",
        help="Do not stop before training when the student's parameters / estimated INT8 size exceed the hardware profile's budgets.",
    ),
]
SetOpt = Annotated[
    Optional[List[str]],
    typer.Option("--set", help="Override a recipe key, e.g. --set distill.epochs=2 (repeatable).", metavar="KEY=VALUE"),
]
FORCE_MEANING = "Redo and replace what already exists"
ForceOpt = Annotated[bool, typer.Option("--force", help=f"{FORCE_MEANING}: rerun stages that are up to date.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only the machine-readable result on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages (warnings and errors still shown).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option(
        "--device",
        help="Where torch work runs: auto, cpu, cuda, cuda:N, npu or npu:N (overrides runtime.device; auto = CUDA, then NPU, then CPU).",
        metavar="DEVICE",
    ),
]
ProviderOpt = Annotated[
    Optional[str], typer.Option("--provider", help="onnxruntime execution provider (overrides validate.provider).", metavar="NAME")
]
TeacherOpt = Annotated[
    Optional[str], typer.Option("--teacher", help="Teacher's timm architecture.", metavar="ARCH", rich_help_panel=RECIPE_FLAGS)
]
StudentOpt = Annotated[
    Optional[str], typer.Option("--student", help="Student's timm architecture.", metavar="ARCH", rich_help_panel=RECIPE_FLAGS)
]
DataOpt = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        help="Data: a folder with train/<class>/* and val/<class>/* (imagefolder), a folder of photos (one class each), or `digits`.",
        metavar="DIR",
        rich_help_panel=RECIPE_FLAGS,
    ),
]
CriticalOpt = Annotated[
    Optional[str],
    typer.Option(
        "--critical-samples",
        help="Share of the training samples marked critical, e.g. 35% (select.top_k_ratio).",
        metavar="SHARE",
        rich_help_panel=RECIPE_FLAGS,
    ),
]
HardwareOpt = Annotated[
    Optional[str],
    typer.Option(
        "--hardware",
        help="Hardware profile to validate for (validate.target): `cann-distill list profiles`.",
        metavar="PROFILE",
        rich_help_panel=RECIPE_FLAGS,
    ),
]
QuantAwareOpt = Annotated[
    bool,
    typer.Option(
        "--quant-aware",
        help="Add quantization-aware distillation after the float phase (distill.qat.enabled).",
        rich_help_panel=RECIPE_FLAGS,
    ),
]


def overrides(set_: Optional[List[str]], device: Optional[str] = None, provider: Optional[str] = None) -> list[str]:
    """--set values plus the shortcuts that are recipe keys too (--device, --provider)."""
    return list(set_ or []) + ([f"runtime.device={device}"] if device else []) + ([f"validate.provider={provider}"] if provider else [])


def invoke(
    fn: Callable[[], Any],
    as_json: bool,
    quiet: bool,
    debug: bool,
    render: Callable[[Any], None],
    to_json: Callable[[Any], Any] = lambda result: result,
    after: Optional[Callable[[Any], None]] = None,
) -> None:
    """Run a library call: its result rendered (stderr) or as JSON (stdout); every failure one `Error:` line."""
    from cann_distill.runtime import distributed  # imports torch: only when a command runs, never for --help

    follower = distributed.launched_rank() > 0  # under torchrun only rank 0 reports; the others say only what went wrong
    quiet = quiet or follower
    as_json = as_json and not follower
    ui.configure(quiet=quiet or as_json)
    result: Any = None
    try:
        result = fn()
        if after is not None:
            after(result)
    except CannDistillError as exc:
        if debug:
            traceback.print_exc()
        if result and as_json:
            print(json.dumps(to_json(result), indent=2))
        elif result and not quiet:
            render(result)
        print(f"Error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt:
        print("Error: interrupted; partial outputs were discarded", file=sys.stderr)
        raise typer.Exit(130)
    except Exception as exc:  # a bug or an unexpected library failure
        if debug:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"Error: {type(exc).__name__}: {cut(first, 300)} (rerun with --debug for the traceback)", file=sys.stderr)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(to_json(result), indent=2))
    elif not quiet:
        render(result)


def _version(value: bool) -> None:
    if value:
        print(f"cann-distill {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Distill a timm teacher into a small student and prove it deploys."""


def main() -> None:
    app()


def recipe_flags(
    teacher: Optional[str] = None,
    student: Optional[str] = None,
    data: Optional[str] = None,
    critical_samples: Optional[str] = None,
    hardware: Optional[str] = None,
    quant_aware: bool = False,
) -> Any:
    from cann_distill.core.recipe_flags import RecipeFlags

    return RecipeFlags(teacher, student, data, critical_samples, hardware, quant_aware)


def load_cli_recipe(
    recipe: Optional[str], set_: Optional[List[str]], flags: Any = None, device: Optional[str] = None, provider: Optional[str] = None
) -> Any:
    """(Recipe, FoundRecipe): the RECIPE argument found (a file or a packaged name, said which), recipe flags compiled into
    overrides, then --set / --device / --provider on top."""
    from rich.markup import escape

    from cann_distill.core.recipe_find import find_recipe
    from cann_distill.core.recipe_flags import flag_overrides
    from cann_distill.core.recipe_load import load_recipe, read_yaml

    found = find_recipe(recipe)
    if found.note:
        ui.info(f"[dim]{escape(found.note)}[/dim]")
    given = flags is not None and flags.given()
    compiled = flag_overrides(flags, read_yaml(found.path), name_it=recipe is None) if given else []
    return load_recipe(found.path, compiled + overrides(set_, device, provider)), found
