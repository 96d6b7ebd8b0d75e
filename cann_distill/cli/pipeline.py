"""Pipeline commands: run, one command per stage, and report (also --compare)."""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import typer
from typing_extensions import Annotated

from cann_distill.cli.app import (
    PIPELINE,
    CriticalOpt,
    DataOpt,
    DebugOpt,
    DeviceOpt,
    ForceOpt,
    HardwareOpt,
    JsonOpt,
    NoBudgetCheckOpt,
    ProviderOpt,
    QuantAwareOpt,
    QuietOpt,
    RecipeArg,
    RunDirOpt,
    SetOpt,
    StudentOpt,
    TeacherOpt,
    app,
    command,
    invoke,
    load_cli_recipe,
    recipe_flags,
)
from cann_distill.cli.render import print_results
from cann_distill.runtime.terminal import ui

StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Exit 1 when a deployment budget (hardware profile / validate.budgets) fails, "
        "or (with the report stage) when distillation measurably hurt or the teacher has no lead.",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted distill from <run_dir>/.distill.resume.pt; refused, before any work, when the recipe changed since.",
    ),
]


def _stages_json(results: list) -> dict:
    return {"stages": [r.to_dict() for r in results]}


def run_stages_cli(
    recipe: Optional[str],
    stages: list[str],
    run_dir: Optional[str],
    set_: Optional[List[str]],
    force: bool,
    flags: Any,
    device: Optional[str] = None,
    provider: Optional[str] = None,
    resume: bool = False,
    budget_check: bool = True,
    packaged_ok: bool = True,
    found_at: Optional[dict[str, Any]] = None,
    jobs: Optional[int] = None,
) -> Callable[[], list]:
    """The library call behind every pipeline command: load the recipe (file, packaged name, flags), check --resume, run.

    `found_at["path"]` learns which recipe file was used (--apply-feedback writes next to it)."""

    def go() -> list:
        from cann_distill.api import run_dir_of, run_stages
        from cann_distill.core.errors import UsageError
        from cann_distill.stages.status import resume_problem

        r, found = load_cli_recipe(recipe, set_, flags, device, provider)
        if found_at is not None:
            found_at["path"] = found.path
        if not packaged_ok and found.packaged:
            raise UsageError(
                f"--apply-feedback writes next to the recipe, and {found.path.stem} is a packaged one; "
                f"copy it first: `cann-distill init {found.path.stem}`"
            )
        if resume and "distill" in stages and (problem := resume_problem(r, run_dir_of(r, run_dir))) is not None:
            raise UsageError(problem)
        return run_stages(r, stages, run_dir=run_dir, force=force, resume=resume, budget_check=budget_check, jobs=jobs)

    return go


def _validate_after(strict: bool, apply_fb: Optional[Callable[[], Any]]) -> Callable[[list], None]:
    from cann_distill.api import apply_feedback, check_gate

    def after(results: list) -> None:
        for r in results:
            for line in r.summary.get("gate", []) if r.stage == "validate" else []:
                mark = "[green]pass[/green]" if line["pass"] else "[red]FAIL[/red]"
                ui.info(f"  gate {mark} {line['budget']}: {line['value']:.4g} (limit {line['limit']:.4g}, {line['source']})")
            for line in r.summary.get("gate_not_measured", []) if r.stage == "validate" else []:
                ui.info(f"  gate [yellow]not measured[/yellow] {line['budget']} (limit {line['limit']:.4g}): {line['why']}")
        if apply_fb is not None:
            out = apply_feedback(apply_fb(), results)
            ui.info(
                f"feedback: wrote {out}; run `cann-distill run {out}` to re-validate with it"
                if out
                else "feedback: nothing to apply (INT8 within thresholds)"
            )
        if strict:
            check_gate(results)

    return after


def _stage_command(stage: str, help_text: str, example: str) -> None:
    def stage_cmd(
        recipe: RecipeArg = None,
        run_dir: RunDirOpt = None,
        set_: SetOpt = None,
        force: ForceOpt = False,
        device: DeviceOpt = None,
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
        go = run_stages_cli(recipe, [stage], run_dir, set_, force, flags, device)
        invoke(go, as_json, quiet, debug, render=print_results, to_json=_stages_json)

    command(stage, PIPELINE, help_text, example)(stage_cmd)


@command(
    "run",
    PIPELINE,
    "Run the stages in order (teacher → select → distill → baseline → validate → report), skipping those up to date; "
    "--from/--to run a part of it. Without RECIPE, runs the packaged default recipe (nine packaged photographs, offline).",
    "cann-distill run resnet10t_from_resnet18_digits --set distill.epochs=2",
)
def run_cmd(
    recipe: RecipeArg = None,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    provider: ProviderOpt = None,
    first: Annotated[
        Optional[str], typer.Option("--from", help="First stage to run (earlier ones must be up to date).", metavar="STAGE")
    ] = None,
    last: Annotated[Optional[str], typer.Option("--to", help="Last stage to run.", metavar="STAGE")] = None,
    resume: ResumeOpt = False,
    strict: StrictOpt = False,
    no_budget_check: NoBudgetCheckOpt = False,
    jobs: Annotated[
        Optional[int],
        typer.Option(
            "--jobs",
            "-j",
            help="2: train the CE-only baseline in a second process beside distill, the two sharing the cores "
            "(faster for small models on a 2-core CPU; other weights than one stage at a time). Default 1: one stage at a time.",
            min=1,
            max=2,
        ),
    ] = None,
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

    def go() -> list:
        from cann_distill.stages.status import stage_span

        stages = stage_span(first, last)
        return run_stages_cli(recipe, stages, run_dir, set_, force, flags, device, provider, resume, not no_budget_check, jobs=jobs)()

    invoke(go, as_json, quiet, debug, render=print_results, to_json=_stages_json, after=_validate_after(strict, None))


_stage_command(
    "teacher",
    "Train the teacher on the training split (or load its checkpoint / pretrained weights).",
    "cann-distill teacher resnet10t_from_resnet18_digits --set teacher.train.epochs=3",
)
_stage_command(
    "select",
    "Run the teacher once over the training set, cache its logits and write the critical-sample index.",
    "cann-distill select --teacher resnet18 --student resnet10t --data digits --critical-samples 35%",
)


@command(
    "distill",
    PIPELINE,
    "Train the student from the teacher: any mix of logit, feature and relation losses (feature taps by timm "
    "feature_info index or module path, see `cann-distill inspect`), the critical-sample index, warmup + cosine, EMA, "
    "best-epoch selection. A resumable checkpoint is saved every epoch and on Ctrl-C.",
    "cann-distill distill recipes/resnet10t_from_resnet18_digits_mgd.yaml --set distill.epochs=2 --resume",
)
def distill_cmd(
    recipe: RecipeArg = None,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    resume: ResumeOpt = False,
    no_budget_check: NoBudgetCheckOpt = False,
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
    go = run_stages_cli(recipe, ["distill"], run_dir, set_, force, flags, device, resume=resume, budget_check=not no_budget_check)
    invoke(go, as_json, quiet, debug, render=print_results, to_json=_stages_json)


_stage_command(
    "baseline",
    "Train the student with cross-entropy only (same data, augmentation and epoch budget as distill): the "
    "reference for the report's transfer efficiency. Runs when report.baseline is true; reused from the shared cache "
    "by any recipe with the same student, data, seed and budget.",
    "cann-distill baseline recipes/resnet10t_from_resnet18_digits.yaml",
)


@command(
    "validate",
    PIPELINE,
    "Export ONNX (class names and preprocessing in its metadata, for `cann-distill predict`), quantize to INT8 with "
    "onnxruntime, measure accuracy/latency/size of FP32 vs INT8, find the layers INT8 hurts most and suggest measured "
    "fixes; check the hardware profile's budgets.",
    "cann-distill validate recipes/resnet10t_from_resnet18_digits.yaml --hardware x86-avx2 --strict --apply-feedback",
)
def validate_cmd(
    recipe: RecipeArg = None,
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    provider: ProviderOpt = None,
    strict: StrictOpt = False,
    apply_fb: Annotated[bool, typer.Option("--apply-feedback", help="Write <recipe>.feedback.yaml with the suggested changes.")] = False,
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
    found: dict[str, Any] = {}
    go = run_stages_cli(recipe, ["validate"], run_dir, set_, force, flags, device, provider, packaged_ok=not apply_fb, found_at=found)
    feedback_to = (lambda: found["path"]) if apply_fb else None
    invoke(go, as_json, quiet, debug, render=print_results, to_json=_stages_json, after=_validate_after(strict, feedback_to))


@command(
    "report",
    PIPELINE,
    "Write report.json and a self-contained report.html (accuracy, transfer metrics, curves, heatmaps, INT8 gap, "
    "latency, budgets) from every stage's artifacts. With --compare, show the key numbers of two or more run dirs side by "
    "side with the winner per row.",
    "cann-distill report --compare runs/resnet10t_from_resnet18_digits runs/resnet10t_from_resnet18_digits_mgd --format markdown",
)
def report_cmd(
    targets: Annotated[
        Optional[List[str]],
        typer.Argument(
            help="RECIPE; with --compare: two or more RUN_DIRs (or report.json files).", show_default=False, metavar="RECIPE|RUN_DIR"
        ),
    ] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Compare the reports of the given run dirs instead of writing one.")] = False,
    fmt: Annotated[
        str, typer.Option("--format", help="--compare output: table (terminal), json or markdown (for a CI comment).", metavar="FORMAT")
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
    from cann_distill.cli.compare import compare_cmd

    paths = list(targets or [])
    if compare:
        compare_cmd(paths, fmt, as_json, quiet, debug)
        return
    flags = recipe_flags(teacher, student, data, critical_samples, hardware, quant_aware)

    def one() -> list:
        from cann_distill.core.errors import UsageError

        if len(paths) > 1:
            raise UsageError(f"report takes one RECIPE (got {len(paths)} arguments); to compare run dirs use --compare")
        return run_stages_cli(paths[0] if paths else None, ["report"], run_dir, set_, force, flags, device)()

    invoke(one, as_json, quiet, debug, render=print_results, to_json=_stages_json, after=_validate_after(strict, None))


__all__ = ["app"]
