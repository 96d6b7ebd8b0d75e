"""The `tune` section of a recipe: the search space of `cann-distill tune` (docs/guides/tune.md).

Every key of the section but the options (`trials`, `metric`, `pruner`, `pruner_warmup_epochs`, `sampler`) is a recipe key path, written as
`--set` takes it (`distill.lr`, `distill.losses[1].temperature`), mapped to a range (`{low, high}`, int or float by
the type of low and high, optional `log` and `step`) or to `{choices: [...]}`. The section is read by `tune` alone:
no stage fingerprints it, so adding it leaves every run dir up to date. Whether each key is a key of the recipe and
each value fits it is checked by applying sample values through the recipe's own checks (`recipe_load.tune_errors`).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Choice = Union[bool, int, float, str, None]  # what optuna's categorical distribution takes
Number = Union[int, float]

OPTIONS = ("trials", "metric", "pruner", "pruner_warmup_epochs", "sampler")
"""The section's own keys; every other key names a recipe key to search."""


class ParamSpec(BaseModel):
    """A recipe key path as `--set` writes it (`distill.lr`, `distill.losses[1].temperature`), searched over a range
    (`low`, `high`, optional `log` or `step`) or a list of `choices`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    low: Optional[Number] = Field(None, description="range: the smallest value; an int range when low and high are both ints")
    high: Optional[Number] = Field(None, description="range: the largest value (included)")
    log: bool = Field(False, description="range: sample on a log scale (needs low > 0)")
    step: Optional[Number] = Field(None, gt=0, description="range: sample on a grid of this step from low")
    choices: Optional[list[Choice]] = Field(None, description="the values to pick from (numbers, strings, booleans, null)")

    @field_validator("low", "high", "step", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError("should be a number")
        return v

    @model_validator(mode="after")
    def _shape(self) -> "ParamSpec":
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("give either choices or a range (low, high, log, step), not both")
            if not self.choices:
                raise ValueError("choices: needs at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs a range {low: ..., high: ...} or {choices: [...]}")
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got low={self.low} > high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: a log range needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("step: a log range is sampled without a step")
        if isinstance(self.low, int) and isinstance(self.high, int) and isinstance(self.step, float):
            raise ValueError(f"step: an int range (int low and high) takes an int step, got {self.step}")
        return self

    @property
    def integer(self) -> bool:
        """An int range: low, high and step (if any) are ints."""
        return all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None) and self.choices is None

    def samples(self) -> list[Choice]:
        """Values that stand for the whole space when checking that it fits its key: each choice, or both ends."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


class TuneConfig(BaseModel):
    """`cann-distill tune`'s search: recipe key paths mapped to ranges or choices, plus the search's options."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    __pydantic_extra__: dict[str, ParamSpec] = Field(init=False)  # type: ignore[assignment]

    trials: Optional[int] = Field(
        None, ge=1, description="trials in the study in all (a rerun continues it up to this many); `--trials` overrides it"
    )
    metric: Literal["val_acc", "best_val_acc"] = Field(
        "val_acc",
        description="what a trial maximises: val_acc = the distilled student's val top-1 (the exported weights); "
        "best_val_acc = its best epoch's val top-1. The test split is never used",
    )
    pruner: Literal["median", "none"] = Field(
        "median", description="median: stop a trial whose val top-1 after an epoch is below the median of earlier trials' at that epoch"
    )
    pruner_warmup_epochs: Optional[int] = Field(
        None,
        ge=0,
        description="epochs every trial runs before the median pruner may stop it; default: a quarter of distill.epochs, "
        "rounded up (the first epochs' val top-1, under the lr warmup, says little about the last)",
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="tpe (Optuna's TPESampler) or random; seeded with the recipe's seed")

    @model_validator(mode="after")
    def _some_keys(self) -> "TuneConfig":
        if not self.space():
            raise ValueError("names no recipe key to search, e.g. tune: {distill.lr: {low: 0.01, high: 0.2, log: true}}")
        return self

    def space(self) -> dict[str, ParamSpec]:
        """The searched recipe keys, in the order written."""
        return dict(self.model_extra or {})
