"""Typer CLI: parse → call the library → print a table or JSON → exit code. No logic here."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from cann_distill.core.errors import CannDistillError, cut
from cann_distill.core.version import __version__
from cann_distill.runtime.terminal import ui

app = typer.Typer(
    name="cann-distill",
    help="Distill a timm teacher into a small student and prove it deploys: INT8 ONNX, measured accuracy and latency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RecipeArg = Annotated[Path, typer.Argument(help="YAML recipe file.", show_default=False)]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default: recipe's run_dir, else runs/<name>).")]
NoBudgetCheckOpt = Annotated[
    bool,
    typer.Option(
        "--no-budget-check",
        help="Do not stop before training when the student's parameters / estimated INT8 size exceed the hardware profile's budgets.",
    ),
]
SetOpt = Annotated[Optional[List[str]], typer.Option("--set", help="Override a recipe key, e.g. --set distill.epochs=2 (repeatable).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even if inputs are unchanged.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only the machine-readable result on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages (warnings and errors still shown).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option(
        "--device",
        help="Where torch work runs: auto, cpu, cuda, cuda:N, npu or npu:N (overrides runtime.device; auto = CUDA, then NPU, then CPU).",
    ),
]


def _overrides(overrides: Optional[List[str]], device: Optional[str] = None, provider: Optional[str] = None) -> list[str]:
    """--set values plus the shortcuts that are recipe keys too (--device, --provider)."""
    return (
        list(overrides or []) + ([f"runtime.device={device}"] if device else []) + ([f"validate.provider={provider}"] if provider else [])
    )


def _print_results(results: list) -> None:
    table = Table(title="cann-distill", title_justify="left")
    for col in ("stage", "status", "seconds", "key results"):
        table.add_column(col)
    for r in results:
        s = r.summary
        key = {
            "teacher": lambda: f"{s.get('arch')} val {100 * s.get('val_acc', 0):.2f}%",
            "select": lambda: f"{s.get('num_critical')}/{s.get('num_samples')} critical ({s.get('strategy')})",
            "distill": lambda: f"{s.get('arch')} val {100 * s.get('val_acc', 0):.2f}%",
            "baseline": lambda: f"{s.get('arch')} CE only, val {100 * s.get('val_acc', 0):.2f}%" if s else "off (report.baseline)",
            "validate": lambda: (
                f"INT8 {100 * s['accuracy']['onnx_int8']:.2f}% (drop {100 * s['accuracy']['int8_drop']:.2f} pt), "
                f"latency ×{s['int8_over_fp32']:.2f} vs FP32"
            ),
            "report": lambda: s.get("title", ""),
        }.get(r.stage if "key" not in s else "", lambda: s.get("key", ""))()  # a stage of task: detect says it itself
        table.add_row(r.stage, r.status, f"{r.seconds:.1f}", key)
    ui.console.print(table)
    for r in results:
        if r.stage == "report":
            t = Table(title=f"report: {r.summary.get('title')}", title_justify="left")
            top1 = f"top-1 ({r.summary.get('split', 'val')})"
            for col in r.summary.get("columns") or ("model", top1, "latency median (b=1)", "latency p99", "size"):
                t.add_column(col)
            for row in r.summary.get("rows", []):
                t.add_row(*row)
            ui.console.print(t)
            ui.console.print(f"report: {Path(r.run_dir) / 'report' / 'report.html'} (+ report.json)", highlight=False)


def _stages_json(results: list) -> dict:
    return {"stages": [r.to_dict() for r in results]}


def _invoke(
    fn: Callable[[], Any],
    as_json: bool,
    quiet: bool,
    debug: bool,
    after: Optional[Callable[[Any], None]] = None,
    render: Callable[[Any], None] = _print_results,
    to_json: Callable[[Any], Any] = _stages_json,
) -> None:
    from cann_distill.runtime import distributed  # imports torch: only when a command runs, never for --help

    follower = distributed.launched_rank() > 0  # under torchrun only rank 0 reports; the others say only what went wrong
    quiet = quiet or follower
    as_json = as_json and not follower
    ui.configure(quiet=quiet or as_json)
    results: Any = []
    try:
        results = fn()
        if after is not None:
            after(results)
    except CannDistillError as exc:
        if debug:
            traceback.print_exc()
        if results and as_json:
            print(json.dumps(to_json(results), indent=2))
        elif results and not quiet:
            render(results)
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
        print(json.dumps(to_json(results), indent=2))
    elif not quiet:
        render(results)


def _stage_command(stage: str, help_text: str, example: str) -> None:
    def command(
        recipe: RecipeArg,
        run_dir: RunDirOpt = None,
        set_: SetOpt = None,
        force: ForceOpt = False,
        device: DeviceOpt = None,
        as_json: JsonOpt = False,
        quiet: QuietOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        from cann_distill.api import run_stages

        _invoke(
            lambda: run_stages(recipe, [stage], run_dir=run_dir, force=force, overrides=_overrides(set_, device)), as_json, quiet, debug
        )

    command.__doc__ = help_text
    app.command(name=stage, help=help_text, epilog=f"Example: {example}")(command)


_stage_command(
    "teacher",
    "Train the teacher on the training split (or load its checkpoint / pretrained weights).",
    "cann-distill teacher recipes/resnet10t_from_resnet18_digits.yaml --set teacher.train.epochs=3",
)
_stage_command(
    "select",
    "Run the teacher once over the training set, cache its logits and write the critical-sample index.",
    "cann-distill select recipes/resnet10t_from_resnet18_digits.yaml --set select.top_k_ratio=0.5",
)


@app.command(
    "distill",
    help="Train the student from the teacher: any mix of logit, feature and relation losses (feature taps by timm "
    "feature_info index or module path, see `cann-distill inspect`), the critical-sample index, warmup + cosine, EMA, "
    "best-epoch selection. A resumable checkpoint is saved every epoch and on Ctrl-C.",
    epilog="Example: cann-distill distill recipes/resnet10t_from_resnet18_digits_mgd.yaml --set distill.epochs=2 --resume",
)
def distill_cmd(
    recipe: RecipeArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue an interrupted run from <run_dir>/.distill.resume.pt (refused if the recipe changed since)."
        ),
    ] = False,
    no_budget_check: NoBudgetCheckOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from cann_distill.api import run_stages

    _invoke(
        lambda: run_stages(
            recipe,
            ["distill"],
            run_dir=run_dir,
            force=force,
            overrides=_overrides(set_, device),
            resume=resume,
            budget_check=not no_budget_check,
        ),
        as_json,
        quiet,
        debug,
    )


_stage_command(
    "baseline",
    "Train the student with cross-entropy only (same data, augmentation and epoch budget as distill): the "
    "reference for the report's transfer efficiency. Runs when report.baseline is true; reused from the shared cache "
    "by any recipe with the same student, data, seed and budget.",
    "cann-distill baseline recipes/resnet10t_from_resnet18_digits.yaml",
)


@app.command(
    "inspect",
    help="List an architecture's feature taps (timm feature_info index, module, channels, stride, output shape) "
    "to name them in a recipe's feature losses (student: '2', teacher: '3'); any module path works too.",
    epilog="Example: cann-distill inspect resnet10t --image-size 32",
)
def inspect_cmd(
    arch: Annotated[str, typer.Argument(help="timm architecture name.", show_default=False)],
    image_size: Annotated[int, typer.Option("--image-size", help="Input height and width for the output shapes.")] = 224,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
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

    _invoke(lambda: inspect_arch(arch, image_size), as_json, quiet, debug, render=render, to_json=lambda info: info)


ProviderOpt = Annotated[Optional[str], typer.Option("--provider", help="onnxruntime execution provider (overrides validate.provider).")]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Exit 1 when a deployment budget (hardware profile / validate.budgets) fails, "
        "or (with the report stage) when distillation measurably hurt or the teacher has no lead.",
    ),
]


def _validate_after(strict: bool, apply_fb: Optional[Path]) -> Callable[[list], None]:
    from cann_distill.api import apply_feedback, check_gate

    def after(results: list) -> None:
        for r in results:
            for line in r.summary.get("gate", []) if r.stage == "validate" else []:
                mark = "[green]pass[/green]" if line["pass"] else "[red]FAIL[/red]"
                ui.info(f"  gate {mark} {line['budget']}: {line['value']:.4g} (limit {line['limit']:.4g}, {line['source']})")
        if apply_fb is not None:
            out = apply_feedback(apply_fb, results)
            ui.info(
                f"feedback: wrote {out}; run `cann-distill run {out}` to re-validate with it"
                if out
                else "feedback: nothing to apply (INT8 within thresholds)"
            )
        if strict:
            check_gate(results)

    return after


@app.command(
    "validate",
    help="Export ONNX, quantize to INT8 with onnxruntime, measure accuracy/latency/size of FP32 vs INT8, "
    "find the layers INT8 hurts most and suggest measured fixes; check the hardware profile's budgets.",
    epilog="Example: cann-distill validate recipes/resnet10t_from_resnet18_digits.yaml --strict --apply-feedback",
)
def validate_cmd(
    recipe: RecipeArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    provider: ProviderOpt = None,
    strict: StrictOpt = False,
    apply_fb: Annotated[bool, typer.Option("--apply-feedback", help="Write <recipe>.feedback.yaml with the suggested changes.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from cann_distill.api import run_stages

    _invoke(
        lambda: run_stages(recipe, ["validate"], run_dir=run_dir, force=force, overrides=_overrides(set_, device, provider)),
        as_json,
        quiet,
        debug,
        after=_validate_after(strict, recipe if apply_fb else None),
    )


@app.command(
    "report",
    help="Write report.json and a self-contained report.html (accuracy, transfer metrics, curves, heatmaps, INT8 gap, "
    "latency, budgets) from every stage's artifacts. With --compare, show the key numbers of two or more run dirs side by "
    "side with the winner per row.",
    epilog="Example: cann-distill report --compare runs/resnet10t_from_resnet18_digits runs/resnet10t_from_resnet18_digits_mgd "
    "--format markdown",
)
def report_cmd(
    targets: Annotated[
        List[Path], typer.Argument(help="RECIPE; with --compare: two or more RUN_DIRs (or report.json files).", show_default=False)
    ],
    compare: Annotated[bool, typer.Option("--compare", help="Compare the reports of the given run dirs instead of writing one.")] = False,
    fmt: Annotated[
        str, typer.Option("--format", help="--compare output: table (terminal), json or markdown (for a CI comment).")
    ] = "table",
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 1 when the distilled student is below its CE-only baseline beyond the noise, "
            "or the teacher does not beat the baseline (nothing to transfer).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from cann_distill.api import run_stages
    from cann_distill.core.errors import UsageError
    from cann_distill.reporting.compare import compare as compare_runs
    from cann_distill.reporting.compare import to_markdown

    if not compare:

        def one() -> Any:
            if len(targets) != 1:
                raise UsageError(f"report takes one RECIPE (got {len(targets)} arguments); to compare run dirs use --compare")
            return run_stages(targets[0], ["report"], run_dir=run_dir, force=force, overrides=_overrides(set_, device))

        _invoke(one, as_json, quiet, debug, after=_validate_after(strict, None))
        return
    fmt = "json" if as_json else fmt

    def run_compare() -> dict:
        if fmt not in ("table", "json", "markdown"):
            raise UsageError(f"--format must be table, json or markdown, got {fmt!r}")
        result = compare_runs(targets)
        for w in result["warnings"]:
            ui.warn(w)
        return result

    def render(result: dict) -> None:
        if fmt == "markdown":
            print(to_markdown(result), end="")
            return
        t = Table(title="cann-distill report --compare", title_justify="left")
        for col in ("metric", *[r["name"] for r in result["runs"]], "winner"):
            t.add_column(col)
        for row in result["rows"]:
            cells = [f"[bold green]{d}[/bold green]" if i == row["winner"] else d for i, d in enumerate(row["display"])]
            t.add_row(
                f"{row['metric']} ({row['better']})", *cells, result["runs"][row["winner"]]["name"] if row["winner"] is not None else "–"
            )
        ui.console.print(t)

    _invoke(run_compare, fmt == "json", quiet and fmt == "table", debug, render=render, to_json=lambda result: result)


@app.command(
    "dashboard",
    help="Serve a local page listing the runs under RUNS_DIR with their stage status and key numbers, live while they "
    "train (per-epoch curves refresh as epochs finish), each linking to its report.html. Binds to 127.0.0.1.",
    epilog="Example: cann-distill dashboard runs --port 9400",
)
def dashboard_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="Folder holding run dirs (or one run dir).")] = Path("runs"),
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 9400,
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but 127.0.0.1 exposes your runs.")] = "127.0.0.1",
    refresh: Annotated[float, typer.Option("--refresh", help="Seconds between page updates.", min=0.1)] = 2.0,
    debug: DebugOpt = False,
) -> None:
    from cann_distill.reporting.dashboard import make_server, serve

    def start() -> Any:
        server = make_server(runs_dir, port, host, refresh)
        ui.info(f"dashboard: {server.url} ({runs_dir}; Ctrl-C stops)")
        try:
            serve(server)
        except KeyboardInterrupt:
            pass
        return None

    _invoke(start, False, False, debug, render=lambda _: None)


@app.command(
    "run",
    help="Run every stage in order (teacher → select → distill → validate → report), skipping those up to date. "
    "Without RECIPE, runs the packaged default recipe (nine packaged photographs, offline).",
    epilog="Example: cann-distill run recipes/resnet10t_from_resnet18_digits.yaml --set distill.epochs=2",
)
def run_cmd(
    recipe: Annotated[
        Optional[Path], typer.Argument(help="YAML recipe file (default: the packaged default recipe).", show_default=False)
    ] = None,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    provider: ProviderOpt = None,
    strict: StrictOpt = False,
    no_budget_check: NoBudgetCheckOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from cann_distill.api import run_pipeline

    _invoke(
        lambda: run_pipeline(
            recipe, run_dir=run_dir, force=force, overrides=_overrides(set_, device, provider), budget_check=not no_budget_check
        ),
        as_json,
        quiet,
        debug,
        after=_validate_after(strict, None),
    )


def _probe_cells(row: dict) -> tuple[str, str]:
    p = row.get("probe") or {}
    if "val_acc" not in p:
        return ("failed", "")
    return (f"{100 * p['val_acc']:.1f}%", f"{100 * p['val_acc_per_int8_ms']:.0f}")


def _render_fit(result: dict) -> None:
    from cann_distill.fit_student import describe_miss

    basis = result["basis"]
    t = Table(
        title=f"fit-student: {result['target']} ({result['provider']}, {result['scheme']['activation_type']} activations, "
        f"reduce_range={result['scheme']['reduce_range']}, batch {result['batch']}, {result['threads']} thread(s), "
        f"{result['image_size']} px) — {basis['kind']}" + (f" ({basis['why']})" if basis["why"] else ""),
        title_justify="left",
    )
    probed = result.get("probe_epochs", 0) > 0
    for col in (
        "candidate",
        "params M",
        "MFLOPs",
        "FP32 ms",
        "INT8 ms",
        "INT8 p99",
        "INT8/FP32",
        "INT8 MB",
        *(("probe val", "val/ms") if probed else ()),
        "fits",
    ):
        t.add_column(col)
    notes = []
    for r in result["candidates"]:
        mark = (
            "[bold green]picked[/bold green]" if r["arch"] == result["picked"] else ("[green]yes[/green]" if r["fits"] else "[red]no[/red]")
        )
        flops = "" if r.get("flops") is None else f"{r['flops'] / 1e6:.1f}"
        if r["status"] != "ok":
            t.add_row(
                r["arch"], f"{r['params'] / 1e6:.2f}", flops, "", "", "", "", "", *(("", "") if probed else ()), f"[red]{r['status']}[/red]"
            )
            notes.append(f"{r['arch']}: {r['status']}: {cut(r['error'], 200)}")
            continue
        note = [f"{m['budget']} {m['value']:.4g} > {m['limit']:.4g} (+{100 * m['excess']:.0f}%)" for m in r["misses"]]
        if r["fp32"]["unstable"] or r["int8"]["unstable"]:
            note.append("latency rounds disagree (busy machine)")
        if note:
            notes.append(f"{r['arch']}: {'; '.join(note)}")
        t.add_row(
            r["arch"] + (" (cached)" if r.get("cached") else ""),
            f"{r['params'] / 1e6:.2f}",
            flops,
            f"{r['fp32']['median_ms']:.3f}±{r['fp32']['spread_ms']:.3f}",
            f"{r['int8']['median_ms']:.3f}±{r['int8']['spread_ms']:.3f}",
            f"{r['int8']['p99_ms']:.3f}",
            f"{r['int8_over_fp32']:.2f}×" + ("" if r["comparison"]["significant"] else "~"),
            f"{r['size_bytes']['int8'] / 1e6:.2f}",
            *(_probe_cells(r) if probed else ()),
            mark,
        )
    ui.console.print(t)
    for line in notes:
        ui.console.print(f"  {line}", highlight=False)
    budgets = ", ".join(f"{k} ≤ {v['limit']:.4g} ({v['source']})" for k, v in result["budgets"].items())
    ui.console.print(f"budgets: {budgets or 'none'}; ~ = INT8/FP32 difference within the measurement spread", highlight=False)
    if result["not_checked"]:
        ui.console.print(f"not checked before training: {', '.join(result['not_checked'])} (validate's gate checks it)", highlight=False)
    if result["picked"]:
        ui.console.print(f"picked {result['picked']}: wrote {result['outputs']['recipe']}", highlight=False)
    elif result["closest_miss"]:
        ui.console.print(f"closest miss: {describe_miss(result['closest_miss'])}", highlight=False)
    ui.console.print(f"measurements: {result['outputs']['json']}", highlight=False)


@app.command(
    "fit-student",
    help="Measure candidate students on a hardware profile before training: build each with the recipe's classes and image "
    "size, export and quantize it as validate would, time FP32 and INT8 in alternating rounds; check the profile's budgets "
    "(latency, size, parameters) and write RECIPE.fit.yaml with the largest student that fits (exit 1 with the closest "
    "miss when none does). Measurements are cached per arch, image size, provider, scheme and library versions.",
    epilog="Example: cann-distill fit-student recipes/resnet10t_from_resnet18_digits.yaml --target x86-avx2 "
    "--candidates resnet10t,lcnet_050,mobilenetv2_050",
)
def fit_student_cmd(
    recipe: RecipeArg,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    target: Annotated[
        Optional[str],
        typer.Option("--target", help="Hardware profile name (configs/hardware/) or a profile .yaml path (default: validate.target)."),
    ] = None,
    candidates: Annotated[
        Optional[str],
        typer.Option(
            "--candidates",
            help="Comma-separated timm archs (default: the student's width/depth variants plus resnet10t/14t, lcnet, mobilenetv2).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Measure again even when cached.")] = False,
    probe_epochs: Annotated[
        int,
        typer.Option(
            "--probe-epochs",
            min=0,
            help="Distill each candidate this many epochs from "
            "select's cached teacher logits (needs `cann-distill select` first); "
            "pick the most accurate that fits.",
        ),
    ] = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from cann_distill.api import run_dir_of
    from cann_distill.core.recipe_load import load_recipe
    from cann_distill.fit_student import fit_student, require_fit

    def go() -> dict:
        r = load_recipe(recipe, list(set_ or []))
        root = run_dir_of(r, run_dir).root
        return fit_student(
            r,
            recipe,
            root / "fit",
            target=target,
            candidates=candidates.split(",") if candidates is not None else None,
            force=force,
            probe_epochs=probe_epochs,
            run_root=root,
        )

    _invoke(go, as_json, quiet, debug, after=require_fit, render=_render_fit, to_json=lambda res: res)


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


if __name__ == "__main__":
    main()
