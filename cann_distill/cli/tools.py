"""Tools: init (a recipe to edit), predict (an exported model on images) and fit-student (measure students first)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from cann_distill.cli.app import (
    FORCE_MEANING,
    TOOLS,
    CriticalOpt,
    DataOpt,
    DebugOpt,
    HardwareOpt,
    JsonOpt,
    QuantAwareOpt,
    QuietOpt,
    RunDirOpt,
    SetOpt,
    StudentOpt,
    TeacherOpt,
    command,
    invoke,
    load_cli_recipe,
    recipe_flags,
)
from cann_distill.cli.render import inert, render_fit, render_note, render_predict


@command(
    "init",
    TOOLS,
    "Write a commented recipe to edit: a copy of a packaged recipe (NAME, see `cann-distill list recipes`), or one built "
    "from --teacher/--student/--data and the other recipe flags. Never replaces a file without --force.",
    "cann-distill init --teacher resnet50 --student resnet18 --data ./my_photos -o my_recipe.yaml",
)
def init_cmd(
    name: Annotated[Optional[str], typer.Argument(help="A packaged recipe to copy.", metavar="NAME", show_default=False)] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="File to write (default: NAME.yaml, else recipe.yaml).", metavar="FILE")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help=f"{FORCE_MEANING}: replace FILE if it exists.")] = False,
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
        from cann_distill.core.recipe_init import init_recipe

        path, origin = init_recipe(name, flags, output, force)
        return {"written": str(path), "from": origin}

    def render(result: dict) -> None:
        written = inert(result["written"], 200)
        render_note(f"wrote {written} (from the {result['from']}); check it with `cann-distill check {written}`")

    invoke(go, as_json, quiet, debug, render=render)


@command(
    "predict",
    TOOLS,
    "Classify images with an exported model (validate's student_fp32.onnx or student_int8.onnx): the top-k classes by "
    "name, each image decoded and preprocessed as evaluation did (size, mean/std, interpolation, crop: the model's metadata). "
    "A detector (task: detect): its boxes per image (class, score, x1 y1 x2 y2 in the image's pixels); --out DIR writes "
    "each image with its boxes drawn.",
    "cann-distill predict runs/resnet10t_from_resnet18_detect_demo/validate/student_int8.onnx street.jpg --out drawn/",
)
def predict_cmd(
    model: Annotated[Path, typer.Argument(help="An ONNX model exported by `cann-distill validate`.", metavar="MODEL", show_default=False)],
    images: Annotated[List[Path], typer.Argument(help="Image files (any size; PNG, JPEG, ...).", metavar="IMAGE", show_default=False)],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes shown per image.", min=1, metavar="K")] = 5,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", help="Detection models: write each image with its boxes drawn into DIR (<name>.png).", metavar="DIR"),
    ] = None,
    min_score: Annotated[
        Optional[float],
        typer.Option("--min-score", help="Detection models: boxes scored below this are not shown or drawn (default 0.3).", metavar="S"),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from cann_distill.quant.predict import predict

    invoke(lambda: predict(model, images, top_k, out, min_score), as_json, quiet, debug, render=render_predict)


@command(
    "fit-student",
    TOOLS,
    "Measure candidate students on a hardware profile before training: build each with the recipe's classes and image "
    "size, export and quantize it as validate would, time FP32 and INT8 in alternating rounds; check the profile's budgets "
    "(latency, size, parameters) and write RECIPE.fit.yaml with the largest student that fits (exit 1 with the closest "
    "miss when none does). Measurements are cached per arch, image size, provider, scheme and library versions.",
    "cann-distill fit-student recipes/resnet10t_from_resnet18_digits.yaml --target x86-avx2 --candidates resnet10t,lcnet_050,mobilenetv2_050",
)
def fit_student_cmd(
    recipe: Annotated[
        str, typer.Argument(help="Recipe YAML file (RECIPE.fit.yaml is written next to it).", metavar="RECIPE", show_default=False)
    ],
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
    target: Annotated[
        Optional[str],
        typer.Option(
            "--target",
            help="Hardware profile name (configs/hardware/) or a profile .yaml path (default: validate.target).",
            metavar="PROFILE",
        ),
    ] = None,
    candidates: Annotated[
        Optional[str],
        typer.Option(
            "--candidates",
            help="Comma-separated timm archs (default: the student's width/depth variants plus resnet10t/14t, lcnet, mobilenetv2).",
            metavar="ARCHS",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help=f"{FORCE_MEANING}: measure again even when cached.")] = False,
    probe_epochs: Annotated[
        int,
        typer.Option(
            "--probe-epochs",
            min=0,
            metavar="EPOCHS",
            help="Distill each candidate this many epochs from select's cached teacher logits (needs `cann-distill select` "
            "first); pick the most accurate that fits.",
        ),
    ] = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    def go() -> dict:
        from cann_distill.api import run_dir_of
        from cann_distill.core.errors import UsageError
        from cann_distill.fit_student import fit_student

        r, found = load_cli_recipe(recipe, set_)
        if found.packaged:
            raise UsageError(
                f"fit-student writes RECIPE.fit.yaml next to the recipe, and {found.path.stem} is a packaged one; "
                f"copy it first: `cann-distill init {found.path.stem}`"
            )
        root = run_dir_of(r, run_dir).root
        return fit_student(
            r,
            found.path,
            root / "fit",
            target=target,
            candidates=candidates.split(",") if candidates is not None else None,
            force=force,
            probe_epochs=probe_epochs,
            run_root=root,
        )

    from cann_distill.fit_student import require_fit

    invoke(go, as_json, quiet, debug, render=render_fit, after=require_fit)
