"""cann-distill through its library entry points (`load_recipe`, `run_stages`): teacher (loads the
shared checkpoint), select (the one-time teacher pass, and for `replay` the stored draws), distill, or
with `"stage": "baseline"` in the spec the CE-only baseline stage alone (it needs no teacher, so its page row
has no one-time cost).

The training loop is timed by wrapping the training DataLoader that `cann_distill.training.loop.fit`
builds (the same `TimedLoader` the other arms use); the package itself is not changed. Should a
version of cann-distill not build its loop that way, the distill stage's wall time is reported
instead and the result says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import arm_common as ac


def test_fields(checkpoint: Path, root: Path, eval_tf: Any, norm: Any) -> dict[str, Any]:
    """The distilled student's per-image test predictions, in the ImageFolder order the other arms use (the
    report pairs them); its top-1 is kept as `test_acc_imagefolder` beside the distill stage's own `test_acc`."""
    import timm
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = timm.create_model(saved["arch"], num_classes=saved["num_classes"], in_chans=saved["in_chans"])
    model.load_state_dict(saved["state_dict"])
    fields = ac.test_fields(*ac.predictions(model, DataLoader(ImageFolder(str(root / "test"), eval_tf), batch_size=256), norm))
    return {"test_acc_imagefolder": fields.pop("test_acc"), **fields}


def stages_for(stage: str) -> list[str]:
    """The stages an arm runs: distill after the teacher and select; the CE-only baseline alone (it reads neither)."""
    return ["teacher", "select", "distill"] if stage == "distill" else [stage]


def main() -> int:
    spec, out = ac.parse_args(__doc__.splitlines()[0])
    started = time.perf_counter()
    ac.setup(spec)
    import cann_distill.training.loop as cd_train
    from cann_distill.api import run_stages
    from cann_distill.core.recipe_load import load_recipe
    from cann_distill.data.transforms import build_transforms, pixel_norm
    from cann_distill.runtime.terminal import ui

    timers: list[ac.TimedLoader] = []
    build_loader = cd_train.loader

    def timed_loader(*args: Any, **kwargs: Any) -> Any:
        made = build_loader(*args, **kwargs)
        if kwargs.get("train"):
            timers.append(ac.TimedLoader(made))
            return timers[-1]
        return made

    cd_train.loader = timed_loader
    ui.configure(quiet=True)
    cfg = spec["cann"]
    run_dir = out.parent / f"{out.stem}.run"
    recipe = load_recipe(Path(cfg["recipe"]), [*cfg["overrides"], f"seed={spec['seed']}", f"select.cache_dir={run_dir / 'cache'}"])
    data_path = ac.DECODE if recipe.data.cache_mb == 0 else f"decoded-pixel cache ({recipe.data.cache_mb} MiB)"
    if spec.get("data_path") not in (None, data_path):
        raise SystemExit(f"the spec asks for data path {spec['data_path']!r}; the recipe gives {data_path!r}")
    stage = spec.get("stage", "distill")
    if stage not in ("distill", "baseline"):
        raise SystemExit(f"the spec's stage must be distill or baseline, got {stage!r}")
    results = {r.stage: r for r in run_stages(recipe, stages_for(stage), run_dir=run_dir, force=True)}
    distill = results[stage].summary
    targets = (distill.get("teacher_targets") or distill.get("teacher", {}).get("logits")) if stage == "distill" else "none (labels only)"
    epochs = timers[-1].epochs if timers else []
    if not epochs:  # the whole stage as one pass: setup and evaluation included, so it is slower than the loop
        steps = spec["epochs"] * spec["steps_per_epoch"]
        epochs = [{"seconds": results[stage].seconds, "samples": steps * spec["batch_size"], "steps": steps}]
    train_tf, eval_tf = build_transforms(recipe.data)
    norm = pixel_norm(recipe.data)
    tested = test_fields(run_dir / stage / "student.pt", Path(spec["data_root"]), eval_tf, norm) if spec["evaluate"] else {}
    ac.write_result(
        out,
        spec,
        started,
        epochs=epochs,
        loop_timer="training DataLoader pass" if timers else f"{stage} stage wall time (the loop was not reached by the timer)",
        distill_seconds=results[stage].seconds,
        stages={name: {"seconds": r.seconds, "status": r.status} for name, r in results.items()},
        test_acc=distill.get("test_acc") if spec["evaluate"] else None,
        **tested,
        val_acc=distill.get("val_acc"),
        teacher_targets=targets,
        teacher_summary=distill.get("teacher"),
        augmented=distill.get("augmented"),
        teacher_mode="eval" if targets == "online" else "no teacher forward",
        stage=stage,
        overrides=cfg["overrides"],
        data_path=data_path,
        data_cache_mb=recipe.data.cache_mb,
        transform_repr=repr(train_tf or eval_tf),
        batch_norm={"mean": list(norm.mean), "std": list(norm.std)},  # applied per batch after a uint8 transform
        versions=ac.versions("torch", "torchvision", "timm", "cann-distill"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
