"""torchdistill's KD, driven the way its own example (examples/torchvision/image_classification.py) drives it.

Runs only in the benchmark environment (`--peer-python`, torchdistill installed there, never a
cann-distill dependency). The config is written in torchdistill's own YAML format, modelled on its
`configs/sample/ilsvrc2012/kd/resnet18_from_resnet34.yaml` (repository at 3e4373c): ImageFolder datasets built with
`!import_call`, `WeightedSumLoss` over one `KDLoss` term, SGD and a scheduler. What is changed for
this benchmark: the data (the shared ImageFolder tree), timm's `create_transform` (the same keyword
arguments every arm gets), timm models registered under the key `timm_model` (torchdistill has
no timm models; registering one is how its docs add a model), the hyper-parameters every arm
shares (SGD or AdamW), a per-step `LambdaLR` with `arm_common.StepSchedule` (linear warmup, then
cosine, as cann-distill schedules it), and no DataParallel / DistributedDataParallel wrappers (one
CPU process).

As in the example, the teacher is never put in eval mode (its BatchNorm uses batch statistics);
the result records the mode seen during training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import arm_common as ac
import torch


def config_yaml(spec: dict[str, Any], teacher_ckpt: str, student_dst: str) -> str:
    """The torchdistill config for this arm (its YAML dialect, tags included)."""
    j = json.dumps
    root, tf, opt, loss = Path(spec["data_root"]), spec["transforms"], spec["optimizer"], spec["loss"]
    if abs(loss["ce_weight"] + loss["kd_weight"] - 1.0) > 1e-9:
        raise SystemExit("torchdistill's KDLoss weighs CE by alpha and KD by 1 - alpha: ce_weight + kd_weight must be 1")
    train_tf = tf["train"] if spec["augment"] else tf["eval"]
    if opt.get("name", "sgd") == "adamw":
        optimizer_key, optimizer_kwargs = "AdamW", {"lr": opt["lr"], "weight_decay": opt["weight_decay"]}
    else:
        optimizer_key = "SGD"
        optimizer_kwargs = {"lr": opt["lr"], "momentum": opt["momentum"], "weight_decay": opt["weight_decay"], "nesterov": opt["nesterov"]}
    schedule = {"epochs": spec["epochs"], "steps_per_epoch": spec["steps_per_epoch"], "warmup_epochs": opt.get("warmup_epochs", 0.0)}

    def dataset(anchor: str, split: str, kwargs: dict[str, Any]) -> str:
        return f"""  &{anchor} digits/{split}: !import_call
    key: 'torchvision.datasets.ImageFolder'
    init:
      kwargs:
        root: {j(str(root / split))}
        transform: !import_call
          key: 'timm.data.create_transform'
          init:
            kwargs: {j(kwargs)}
"""

    def model(role: str) -> str:
        m = spec[role]
        return j({"arch": m["arch"], "num_classes": spec["num_classes"], "in_chans": spec["in_chans"]})

    workers = int(spec["workers"])
    loader_kwargs = {"batch_size": spec["batch_size"], "num_workers": workers, "drop_last": True, "persistent_workers": workers > 0}
    eval_kwargs = {"batch_size": 256, "num_workers": 0, "drop_last": False}
    return f"""datasets:
{dataset("digits_train", "train", train_tf)}{dataset("digits_val", "val", tf["eval"])}{dataset("digits_test", "test", tf["eval"])}
models:
  teacher_model:
    key: 'timm_model'
    kwargs: {model("teacher")}
    src_ckpt: {j(teacher_ckpt)}
  student_model:
    key: 'timm_model'
    kwargs: {model("student")}
    src_ckpt:
    dst_ckpt: {j(student_dst)}

train:
  log_freq: 1000000
  num_epochs: {spec["epochs"]}
  train_data_loader:
    dataset_id: *digits_train
    sampler:
      class_or_func: !import_get
        key: 'torch.utils.data.RandomSampler'
      kwargs:
    kwargs: {j(loader_kwargs)}
    cache_output:
  val_data_loader:
    dataset_id: *digits_val
    sampler: &val_sampler
      class_or_func: !import_get
        key: 'torch.utils.data.SequentialSampler'
      kwargs:
    kwargs: {j(eval_kwargs)}
  teacher:
    forward_proc: 'forward_batch_only'
    sequential: []
    requires_grad: False
  student:
    forward_proc: 'forward_batch_only'
    adaptations:
    sequential: []
    requires_grad: True
    frozen_modules: []
  optimizer:
    key: {j(optimizer_key)}
    kwargs: {j(optimizer_kwargs)}
  scheduler:
    key: 'LambdaLR'
    kwargs:
      lr_lambda: !import_call
        key: 'arm_common.StepSchedule'
        init:
          kwargs: {j(schedule)}
    scheduling_step: 1
  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
        kd:
          criterion:
            key: 'KDLoss'
            kwargs:
              student_module_path: '.'
              student_module_io: 'output'
              teacher_module_path: '.'
              teacher_module_io: 'output'
              temperature: {loss["temperature"]}
              alpha: {loss["ce_weight"]}
              reduction: 'batchmean'
          weight: 1.0

test:
  test_data_loader:
    dataset_id: *digits_test
    sampler: *val_sampler
    kwargs: {j(eval_kwargs)}
"""


def main() -> int:
    spec, out = ac.parse_args(__doc__.splitlines()[0])
    started = time.perf_counter()
    import timm
    from torchdistill.common import yaml_util
    from torchdistill.common.main_util import import_dependencies, load_ckpt, set_seed
    from torchdistill.core.distillation import get_distillation_box
    from torchdistill.datasets.util import build_data_loader
    from torchdistill.misc.log import MetricLogger, SmoothedValue
    from torchdistill.models.official import get_image_classification_model
    from torchdistill.models.registry import get_model, register_model

    @register_model(key="timm_model")
    def timm_model(arch: str, num_classes: int, in_chans: int) -> torch.nn.Module:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans)

    ac.setup(spec)  # threads; seeds again below as the example does
    work = out.parent / f"{out.stem}.torchdistill"
    work.mkdir(parents=True, exist_ok=True)
    # torchdistill's checkpoint layout: {"model": state_dict}
    teacher_ckpt = work / "teacher.pt"
    torch.save({"model": ac.state_dict_of(torch.load(spec["teacher"]["checkpoint"], map_location="cpu", weights_only=True))}, teacher_ckpt)
    config_path = work / "config.yaml"
    config_text = config_yaml(spec, str(teacher_ckpt), str(work / "student_best.pt"))
    config_path.write_text(config_text)

    # examples/torchvision/image_classification.py: main() and train(), on the CPU, not distributed
    device = torch.device("cpu")
    set_seed(spec["seed"])
    config = yaml_util.load_yaml_file(str(config_path))
    import_dependencies(config.get("dependencies", None))
    dataset_dict, models_config = config["datasets"], config["models"]

    def load_model(model_config: dict[str, Any]) -> torch.nn.Module:
        model = get_image_classification_model(model_config, False)
        if model is None:
            model = get_model(model_config["key"], model_config.get("repo_or_dir", None), **model_config["kwargs"])
        load_ckpt(model_config.get("src_ckpt", None), model=model, strict=True)
        return model.to(device)

    teacher_model, student_model = load_model(models_config["teacher_model"]), load_model(models_config["student_model"])
    train_config = config["train"]
    box = get_distillation_box(teacher_model, student_model, dataset_dict, train_config, device, None, False, 1)
    box.train_data_loader = timed = ac.TimedLoader(box.train_data_loader)
    teacher_modes = set()
    for epoch in range(box.num_epochs):
        box.pre_epoch_process(epoch=epoch)
        teacher_modes.add("train" if box.teacher_model.training else "eval")
        # train_one_epoch()
        metric_logger = MetricLogger(delimiter="  ")
        metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value}"))
        metric_logger.add_meter("img/s", SmoothedValue(window_size=10, fmt="{value}"))
        for sample_batch, targets, supp_dict in metric_logger.log_every(
            box.train_data_loader, train_config["log_freq"], f"Epoch: [{epoch}]"
        ):
            start_time = time.time()
            sample_batch, targets = sample_batch.to(device), targets.to(device)
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
            metric_logger.update(loss=loss.item(), lr=box.optimizer.param_groups[0]["lr"])
            metric_logger.meters["img/s"].update(sample_batch.shape[0] / (time.time() - start_time))
            if torch.isnan(loss) or torch.isinf(loss):
                raise ValueError(f"The training loop was broken due to loss = {loss}")
        box.post_epoch_process()

    tested: dict = {"test_acc": None}
    if spec["evaluate"]:
        test_loader = build_data_loader(
            dataset_dict[config["test"]["test_data_loader"]["dataset_id"]], config["test"]["test_data_loader"], False
        )
        tested = ac.test_fields(*ac.predictions(student_model, test_loader))
    box.clean_modules()
    ac.write_result(
        out,
        spec,
        started,
        epochs=timed.epochs,
        **tested,
        teacher_targets="online",
        augmented=spec["augment"],
        teacher_mode="/".join(sorted(teacher_modes)),
        config=config_text,
        transform_repr=repr(dataset_dict["digits/train"].transform),
        data_path=ac.DECODE,  # torchvision's ImageFolder opens and decodes every file every epoch
        versions=ac.versions("torch", "torchvision", "timm", "torchdistill"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
