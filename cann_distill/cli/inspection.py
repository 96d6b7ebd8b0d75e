"""Inspect commands: check, status, list, inspect, env, dashboard. None of them trains or writes into a run dir."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from cann_distill.cli.app import (
    INSPECT,
    CriticalOpt,
    DataOpt,
    DebugOpt,
    HardwareOpt,
    JsonOpt,
    QuantAwareOpt,
    QuietOpt,
    RecipeArg,
    RunDirOpt,
    SetOpt,
    StudentOpt,
    TeacherOpt,
    command,
    invoke,
    load_cli_recipe,
    recipe_flags,
)
from cann_distill.cli.render import inert, render_env, render_list, render_note, render_status, render_teacher_fit
from cann_distill.runtime.terminal import ui


@command(
    "check",
    INSPECT,
    "Check a recipe without running anything and print it resolved (every key, defaults filled in, flags and --set "
    "applied) as YAML on stdout; exit 2 with every problem on one line. Also prints the teacher–student capacity gap "
    "(parameters, FLOPs; both built untrained) and warns when the run dir's teacher is not clearly better than "
    "fit-student's probe of the student.",
    "cann-distill check resnet10t_from_resnet18_digits --set distill.epochs=2",
)
def check_cmd(
    recipe: RecipeArg = None,
    set_: SetOpt = None,
    teacher: TeacherOpt = None,
    student: StudentOpt = None,
    data: DataOpt = None,
    critical_samples: CriticalOpt = None,
    hardware: HardwareOpt = None,
    quant_aware: QuantAwareOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    flags = recipe_flags(teacher, student, data, critical_samples, hardware, quant_aware)

    def go() -> dict:
        from cann_distill.api import run_dir_of
        from cann_distill.fit_student import recipe_fit

        r, found = load_cli_recipe(recipe, set_, flags)
        run = run_dir_of(r).root
        return {"recipe": str(found.path), "name": r.name, "run_dir": str(run), "resolved": r.to_dict(), "fit": recipe_fit(r, run)}

    def print_yaml(result: dict) -> None:  # the result itself: printed with --quiet too
        import yaml

        print(yaml.safe_dump(result["resolved"], sort_keys=False, allow_unicode=False), end="")

    def render(result: dict) -> None:
        print_yaml(result)
        render_note(f"ok: {inert(result['recipe'], 200)} is a valid recipe (run dir: {inert(result['run_dir'], 200)})")
        render_teacher_fit(result["fit"])

    invoke(go, as_json, quiet, debug, render=render, after=print_yaml if quiet and not as_json else None)


@command(
    "status",
    INSPECT,
    "Show each stage of a run: up to date, stale (and why: which recipe keys, upstream outputs or stage code changed) "
    "or missing, from the same fingerprints `run` skips by; runs nothing.",
    "cann-distill status runs/resnet10t_from_resnet18_digits",
)
def status_cmd(
    target: Annotated[
        Optional[str],
        typer.Argument(help="A recipe (file or packaged name) or a run dir (its recipe.resolved.yaml is read).", metavar="RECIPE|RUN_DIR"),
    ] = None,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    def go() -> dict:
        from cann_distill.api import run_dir_of
        from cann_distill.core.recipe_load import load_recipe
        from cann_distill.stages.distill import resume_path
        from cann_distill.stages.status import run_dir_recipe, run_status
        from cann_distill.store.rundir import RunDir

        if target is not None and Path(target).is_dir():
            source = run_dir_recipe(Path(target))
            r, run = load_recipe(source, list(set_ or [])), RunDir(target)
            again = [str(source), "--run-dir", target]
        else:
            r, found = load_cli_recipe(target, set_)
            source, run = found.path, run_dir_of(r, run_dir)
            again = [*([target] if target else []), *(a for item in set_ or [] for a in ("--set", item))]
            again += ["--run-dir", run_dir] if run_dir else []
        stages = run_status(r, run)
        todo = [s.stage for s in stages if s.state in ("stale", "missing")]
        command = shlex.join(["cann-distill", "run", *again])
        return {
            "recipe": str(source),
            "run_dir": str(run.root),
            "stages": [s.to_dict() for s in stages],
            "resume": f"distill was interrupted; `{command} --resume` continues it" if resume_path(run).exists() else None,
            "next": f"`{command}` runs {', '.join(todo)}" if todo else "every stage is up to date",
        }

    invoke(go, as_json, quiet, debug, render=render_status)


@command(
    "list",
    INSPECT,
    "List what a recipe can name, each with its one-line description and arguments: recipes (packaged), losses, "
    "selectors (classification and detection, with their task), schedules (temperature), profiles (hardware), archs (timm). PATTERN: a substring, or a glob such as 'resnet1*'.",
    "cann-distill list losses kd",
)
def list_cmd(
    kind: Annotated[
        str, typer.Argument(help="recipes, losses, selectors, schedules, profiles or archs.", metavar="WHAT", show_default=False)
    ],
    pattern: Annotated[Optional[str], typer.Argument(help="Only names matching this.", metavar="PATTERN", show_default=False)] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    def go() -> dict:
        from cann_distill.core.catalog import catalog

        return {"kind": kind, "pattern": pattern, "entries": [e.to_dict() for e in catalog(kind, pattern)]}

    invoke(go, as_json, quiet, debug, render=render_list)


@command(
    "inspect",
    INSPECT,
    "List an architecture's feature taps (timm feature_info index, module, channels, stride, output shape) "
    "to name them in a recipe's feature losses (student: '2', teacher: '3'); any module path works too.",
    "cann-distill inspect resnet10t --image-size 32",
)
def inspect_cmd(
    arch: Annotated[str, typer.Argument(help="timm architecture name.", show_default=False, metavar="ARCH")],
    image_size: Annotated[int, typer.Option("--image-size", help="Input height and width for the output shapes.", metavar="PIXELS")] = 224,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from rich.table import Table

    from cann_distill.models.taps import inspect_arch

    def render(info: dict) -> None:
        t = Table(title=f"{info['arch']} taps at {info['image_size']}x{info['image_size']}", title_justify="left")
        for col in ("tap", "module", "channels", "stride", "output shape"):
            t.add_column(col)
        for row in info["taps"]:
            t.add_row(
                row["tap"],
                row["module"],
                str(row["channels"]),
                "" if row["stride"] is None else str(row["stride"]),
                "x".join(str(d) for d in row["shape"]),
            )
        ui.console.print(t)
        ui.console.print(f"or any module path, e.g. {info['module_path_example']}", highlight=False)

    invoke(lambda: inspect_arch(arch, image_size), as_json, quiet, debug, render=render)


@command(
    "env",
    INSPECT,
    "Print what a bug report needs: versions, the CPU and its features (/proc/cpuinfo flags such as avx2, "
    "avx512_vnni), torch devices and onnxruntime execution providers.",
    "cann-distill env --json",
)
def env_cmd(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    from cann_distill.runtime.environment import environment

    invoke(environment, as_json, False, debug, render=render_env)


@command(
    "dashboard",
    INSPECT,
    "Serve a local page listing the runs under RUNS_DIR with their stage status and key numbers, live while they "
    "train (per-epoch curves refresh as epochs finish), each linking to its report.html. Binds to 127.0.0.1.",
    "cann-distill dashboard runs --port 9400",
)
def dashboard_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="Folder holding run dirs (or one run dir).", metavar="RUNS_DIR")] = Path("runs"),
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).", metavar="PORT")] = 9400,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but 127.0.0.1 exposes your runs.", metavar="ADDRESS")
    ] = "127.0.0.1",
    allow_host: Annotated[
        Optional[List[str]],
        typer.Option(
            "--allow-host",
            help="A name the page may be reached under besides the bound address and localhost (repeatable; "
            "other Host headers are refused with 403).",
            metavar="NAME",
        ),
    ] = None,
    refresh: Annotated[float, typer.Option("--refresh", help="Seconds between page updates.", min=0.1, metavar="SECONDS")] = 2.0,
    debug: DebugOpt = False,
) -> None:
    from cann_distill.reporting.dashboard import is_loopback, make_server, serve

    def start() -> Any:
        server = make_server(runs_dir, port, host, refresh, allow_host or ())
        if not is_loopback(host):
            ui.warn(f"dashboard: bound to {host}, beyond this machine: anyone who can reach it sees your runs' names, numbers and reports")
        ui.info(f"dashboard: {server.url} ({runs_dir}; Ctrl-C stops)")
        try:
            serve(server)
        except KeyboardInterrupt:
            pass
        return None

    invoke(start, False, False, debug, render=lambda _: None)
