"""Plain PyTorch Hinton KD: the baseline every tool must beat. The teacher runs on every batch.

loss = w_ce * CE(s, y) + w_kd * T^2 * KL(softmax(t/T) || softmax(s/T)) (batch mean), the recipe's
optimizer (SGD with Nesterov momentum, or AdamW), linear warmup then cosine decay per step as
cann-distill schedules it. The teacher is in eval mode (BatchNorm uses its running statistics)
under no_grad; torchdistill's example leaves it in training mode.

With `"kd": false` in the spec (the `student` arm) the loss is CE alone (weight 1) and no teacher
is loaded: the student trained on its own, the reference for transfer efficiency.

With `"teacher_forward": false` in the spec (the `ceiling` arm) the same loop skips the teacher
and distills towards one fixed target: what removing the teacher forward alone buys this loop,
the ceiling for any stored-target method that changes nothing else. Timing only.
"""

from __future__ import annotations

import time
from pathlib import Path

import arm_common as ac
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder


def main() -> int:
    spec, out = ac.parse_args(__doc__.splitlines()[0])
    started = time.perf_counter()
    ac.setup(spec)
    train_tf, eval_tf = ac.transforms(spec)
    root, workers, opt_cfg, loss_cfg = Path(spec["data_root"]), int(spec["workers"]), spec["optimizer"], spec["loss"]
    train = ImageFolder(str(root / "train"), train_tf)
    loader = ac.TimedLoader(
        DataLoader(
            train,
            batch_size=spec["batch_size"],
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(spec["seed"]),
        )
    )

    ac.setup(spec)  # the student's initial weights come straight from the seed, as in cann-distill
    student = ac.model_from_spec(spec, "student")
    use_kd = spec.get("kd", True)
    forward = use_kd and spec.get("teacher_forward", True)
    teacher = ac.model_from_spec(spec, "teacher").eval() if forward else None
    if teacher is not None:
        teacher.requires_grad_(False)
    opt = ac.make_optimizer(student.parameters(), opt_cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, ac.StepSchedule(spec["epochs"], len(loader), opt_cfg.get("warmup_epochs", 0.0)))
    w_ce, w_kd, t = loss_cfg["ce_weight"], loss_cfg["kd_weight"], loss_cfg["temperature"]
    fixed = torch.zeros(spec["batch_size"], spec["num_classes"])  # uniform teacher logits when the teacher is skipped

    for _ in range(spec["epochs"]):
        student.train()
        for x, y in loader:
            s_logits = student(x)
            if not use_kd:
                loss = F.cross_entropy(s_logits, y)
            else:
                if forward:
                    with torch.no_grad():
                        t_logits = teacher(x)
                else:
                    t_logits = fixed
                kd = F.kl_div(F.log_softmax(s_logits / t, 1), F.log_softmax(t_logits / t, 1), reduction="batchmean", log_target=True)
                loss = w_ce * F.cross_entropy(s_logits, y) + w_kd * t * t * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    tested = {"test_acc": None}
    if spec["evaluate"]:
        tested = ac.test_fields(*ac.predictions(student, DataLoader(ImageFolder(str(root / "test"), eval_tf), batch_size=256)))
    ac.write_result(
        out,
        spec,
        started,
        epochs=loader.epochs,
        **tested,
        teacher_targets="online" if forward else ("none (CE only)" if not use_kd else "none (skipped)"),
        augmented=spec["augment"],
        teacher_mode="eval" if forward else ("no teacher" if not use_kd else "no teacher forward"),
        transform_repr=repr(train_tf),
        data_path=ac.DECODE,  # torchvision's ImageFolder opens and decodes every file every epoch
        versions=ac.versions("torch", "torchvision", "timm"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
