"""Feature taps by name on timm models: `"2"` is `feature_info[2]`, anything else a module path.

timm's own feature API comes first: indexed taps are read with `forward_intermediates`
(one forward that also yields the final features, so the logits come from `forward_head`).
Models without it, and module paths, are tapped with forward hooks that live only for the
duration of one call, so a tapped model stays a plain timm model (deep-copyable, exportable).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from cann_distill.core.registry import suggest


def feature_info(model: nn.Module) -> list[dict[str, Any]]:
    """timm's `feature_info` as a list of dicts (`module`, `num_chs`, `reduction`); [] when the model has none."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "get_dicts"):
        info = info.get_dicts()
    return [dict(d) for d in info if isinstance(d, dict) and "module" in d]


def is_index(name: str) -> bool:
    return name.isdigit()


def module_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n]


def module_path_example(model: nn.Module) -> str:
    """A real module path of this model, for error messages (`layer2.0` on a ResNet)."""
    info = feature_info(model)
    names = module_names(model)
    if info:
        mid = info[len(info) // 2]["module"]
        children = [n for n in names if n.startswith(mid + ".") and "." not in n[len(mid) + 1 :]]
        return children[0] if children else mid
    return names[len(names) // 2] if names else "features"


def tap_error(model: nn.Module, arch: str, name: str) -> Optional[str]:
    """None when `name` is a tap of `model`, else a one-line message listing the valid ones."""
    info = feature_info(model)
    if is_index(name):
        if int(name) < len(info):
            return None
    elif name in dict(model.named_modules()) and name:
        return None
    valid = ", ".join(str(i) for i in range(len(info)))
    hint = "" if is_index(name) else suggest(name, module_names(model)).rstrip(")").replace(" (did you mean:", "; did you mean:")
    where = f"{valid} or a module path like {module_path_example(model)}" if valid else f"a module path like {module_path_example(model)}"
    return f"layer '{name}' not in {arch}'s taps (valid: {where}{hint})"


def _first_tensor(out: Any) -> Optional[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)):
        return next((o for o in out if isinstance(o, torch.Tensor)), None)
    return None


class FeatureTapper:
    """Call a timm model and return `{"logits": ..., "feat.<name>": ...}` for the named taps.

    Not an nn.Module: it holds a reference to the model and adds nothing to its state.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], arch: str = "model") -> None:
        self.model = model
        self.arch = arch
        self.names = list(dict.fromkeys(names))
        bad = [err for n in self.names if (err := tap_error(model, arch, n))]
        if bad:
            raise ValueError("; ".join(bad))
        self.info = feature_info(model)
        self.indices = sorted({int(n) for n in self.names if is_index(n)})
        only_indices = all(is_index(n) for n in self.names)
        self.mode = "intermediates" if self.names and only_indices and hasattr(model, "forward_intermediates") else "hooks"
        if not self.names:
            self.mode = "plain"

    def module_of(self, name: str) -> str:
        return self.info[int(name)]["module"] if is_index(name) else name

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.mode == "plain":
            return {"logits": self.model(x)}
        if self.mode == "intermediates":
            out = self._intermediates(x)
            if out is not None:
                return out
            self.mode = "hooks"  # this model's intermediates do not line up with its feature_info
        return self._hooks(x)

    def _intermediates(self, x: torch.Tensor) -> Optional[dict[str, torch.Tensor]]:
        final, feats = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=False)  # type: ignore[operator]
        if len(feats) != len(self.indices) or any(
            f.dim() != 4 or f.shape[1] != self.info[i].get("num_chs", f.shape[1]) for f, i in zip(feats, self.indices)
        ):
            return None
        out = {"logits": self.model.forward_head(final)}  # type: ignore[operator]
        by_index = dict(zip(self.indices, feats))
        out.update({f"feat.{n}": by_index[int(n)] for n in self.names})
        return out

    def _hooks(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for name in self.names:
            module = self.model.get_submodule(self.module_of(name))

            def hook(_m: nn.Module, _inp: Any, output: Any, name: str = name) -> None:
                t = _first_tensor(output)
                if t is None:
                    raise ValueError(f"{self.arch}: module '{self.module_of(name)}' (tap '{name}') does not output a tensor")
                captured[name] = t

            handles.append(module.register_forward_hook(hook))
        try:
            logits = self.model(x)
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in self.names if n not in captured]
        if missing:
            raise ValueError(f"{self.arch}: tap(s) {', '.join(missing)} did not run in the forward pass")
        return {"logits": logits, **{f"feat.{n}": captured[n] for n in self.names}}


def describe_taps(model: nn.Module, arch: str, image_size: int, in_chans: int = 3) -> dict[str, Any]:
    """Every feature_info tap of `model` with channels, stride and output shape (one dry run, eval mode)."""
    info = feature_info(model)
    names = [str(i) for i in range(len(info))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = FeatureTapper(model, names, arch)(torch.zeros(1, in_chans, image_size, image_size))
    finally:
        model.train(was_training)
    rows = []
    for i, d in enumerate(info):
        shape = list(out[f"feat.{i}"].shape[1:])
        rows.append({"tap": str(i), "module": d["module"], "channels": int(shape[0]), "stride": d.get("reduction"), "shape": shape})
    logits = out["logits"]
    rows.append(
        {"tap": "logits", "module": "(classifier)", "channels": int(logits.shape[1]), "stride": None, "shape": list(logits.shape[1:])}
    )
    return {"arch": arch, "image_size": image_size, "in_chans": in_chans, "taps": rows, "module_path_example": module_path_example(model)}


def inspect_arch(arch: str, image_size: int = 224, in_chans: int = 3, num_classes: int = 1000) -> dict[str, Any]:
    """`describe_taps` for a freshly created (untrained) timm model."""
    from cann_distill.core.errors import UsageError
    from cann_distill.core.recipe import timm_archs
    from cann_distill.models.build import create_model

    if arch not in timm_archs():
        raise UsageError(f"unknown timm architecture '{arch}'{suggest(arch, sorted(timm_archs()))}")
    if image_size < 8:
        raise UsageError(f"--image-size must be >= 8, got {image_size}")
    model = create_model(arch, num_classes=num_classes, in_chans=in_chans)
    try:
        return describe_taps(model, arch, image_size, in_chans)
    except RuntimeError as exc:  # e.g. a ViT with a fixed input size
        raise UsageError(f"{arch} does not run at {image_size}x{image_size}: {str(exc).splitlines()[0][:200]}") from None
