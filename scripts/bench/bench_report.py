"""The benchmark's numbers from its raw JSON (`summarize`) and docs/benchmarks.md from them (`render`).

Both are pure functions of the JSON that `bench.py` writes: nothing in the page is typed by hand,
so `python scripts/bench/bench.py --render --out RUN.json --docs docs/benchmarks.md` regenerates it.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any, Optional

ARM_ORDER = (
    "student",
    "baseline",
    "plain",
    "ceiling",
    "torchdistill",
    "online",
    "cached",
    "replay",
    "default",
    "patient",
    "plain_long",
    "td_long",
)
BASELINES = ("plain", "torchdistill")
CANN_ARMS = ("online", "cached", "replay", "default", "patient")
HEADLINE = ("default", "patient")  # the cann-distill arms "where cann-distill loses" is about
LONG_PEERS = ("plain_long", "td_long")  # peers given the patient arm's time: compared with the patient arm only
REFERENCES = ("student", "baseline")  # trained on the labels alone: the plain loop's student, cann-distill's baseline stage


def _same_budget(cann: str, peer: str) -> bool:
    """Whether cann-distill arm `cann` and peer `peer` are compared: a long peer only with the patient arm."""
    return peer not in LONG_PEERS or cann == "patient"


# targets: replay's training samples/s over each baseline, per teacher
SPEED_TARGETS = {"resnet50": 2.5, "resnet18": 2.0}
ACCURACY_TOLERANCE_PT = 0.5
WARMUP_EPOCHS = 1  # every arm's first epoch is left out of its loop rate
PER_STUDENT = {  # the headline's comparable arms: what each is compared as
    "plain": "baseline: teacher forward on every augmented batch",
    "torchdistill": "baseline: teacher forward on every augmented batch",
    "online": "same work per step as the baselines (teacher forward on every augmented batch)",
    "replay": "cost per extra student once select's stored draws exist (no teacher forward)",
    "cached": "cost per extra student once select's logits exist (no teacher forward; un-augmented targets)",
}
DATA_PATHS = {
    "decode": "every arm reads and decodes the PNG files every epoch (cann-distill with `data.cache_mb: 0`, its "
    "decoded-pixel cache off; the plain loop and torchdistill through torchvision `ImageFolder`, which has none)",
}
NOT_RECORDED = (
    "not recorded (a run made before the data path was fixed: the cann-distill arms may have kept decoded pixels in "
    "memory, `data.cache_mb`, while the others decoded every epoch)"
)


# ----------------------------------------------------------------------------- per run


def timed_epochs(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The epochs a run's rate comes from: all but the first (warm-up), the same rule for every arm."""
    epochs = run.get("epochs") or []
    if len(epochs) <= WARMUP_EPOCHS:
        raise ValueError(f"{run.get('arm', 'a run')}: {len(epochs)} epoch(s) timed; the rate needs a warm-up epoch and one more")
    return epochs[WARMUP_EPOCHS:]


def timeable(run: dict[str, Any]) -> bool:
    """A warm-up epoch and at least one more that trained on something (a split smaller than one batch trains on none)."""
    epochs = run.get("epochs") or []
    return len(epochs) > WARMUP_EPOCHS and sum(e["samples"] for e in epochs[WARMUP_EPOCHS:]) > 0


def loop_rate(run: dict[str, Any]) -> float:
    """Samples/s of the training loop over the epochs after the warm-up one (`timed_epochs`)."""
    timed = timed_epochs(run)
    return sum(e["samples"] for e in timed) / sum(e["seconds"] for e in timed)


def one_time_seconds(run: dict[str, Any]) -> float:
    """What an arm pays once before its loop: cann-distill's select stage (teacher pass, replay draws); 0 for the others."""
    return float(run.get("stages", {}).get("select", {}).get("seconds", 0.0))


def student_seconds(run: dict[str, Any]) -> float:
    """Seconds to train one more student for the run's epochs at the steady loop rate (warm-up epoch at that rate
    too), with what select made already there: for replay and cached, the cost per extra student."""
    return sum(e["samples"] for e in run["epochs"]) / loop_rate(run)


def end_to_end_seconds(run: dict[str, Any]) -> float:
    """One student from nothing: `student_seconds` plus the one-time select stage (the teacher's labelling)."""
    return student_seconds(run) + one_time_seconds(run)


def amortised_rate(run: dict[str, Any]) -> float:
    """Samples/s at the loop's steady rate with the one-time cost spread over the run's epochs.

    Not projected to other epoch counts: replay's one-time cost grows with its number of draws.
    """
    return sum(e["samples"] for e in run["epochs"]) / end_to_end_seconds(run)


_NORMALIZE = re.compile(r"\n\s*Normalize\(mean=tensor\(\[([^\]]*)\]\), std=tensor\(\[([^\]]*)\]\)\)")


def _rounded(values: Any) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in values)


def canonical_transform(run: dict[str, Any]) -> Optional[str]:
    """A run's training transform in a form that compares across arms (None: not recorded).

    cann-distill's transform stops at uint8 pixels (timm's `MaybePILToTensor`) and normalises per batch with the
    same operations as ToTensor + Normalize (its result's `batch_norm`), and runs colour jitter as
    `FastColorJitter`, bit-identical to torchvision's `ColorJitter` with the same RNG draws. So the normalisation
    is compared as numbers and those two names as their torchvision / timm equivalents; every other step as written.
    """
    text = run.get("transform_repr")
    if text is None:
        return None
    norm = None
    if (m := _NORMALIZE.search(text)) is not None:
        norm = (_rounded(m.group(1).split(",")), _rounded(m.group(2).split(",")))
        text = text[: m.start()] + text[m.end() :]
    elif run.get("batch_norm") and "MaybePILToTensor()" in text:
        norm = (_rounded(run["batch_norm"]["mean"]), _rounded(run["batch_norm"]["std"]))
    text = text.replace("FastColorJitter(", "ColorJitter(").replace("MaybePILToTensor()", "MaybeToTensor()")
    return f"{text}, normalised with (mean, std) {norm}"


def transforms_identical(runs: list[dict[str, Any]]) -> Optional[bool]:
    """Whether the finished augmented runs built one training transform (None: none recorded one).

    Runs that trained without augmentation (an older cann-distill's cached arm) are left out: their rows say so.
    """
    reprs = {
        canonical_transform(r)
        for r in _done(runs)
        if r.get("augmented", True) is not False and "data.augment.enabled=false" not in r.get("overrides", [])
    }
    reprs.discard(None)
    return None if not reprs else len(reprs) == 1


def data_paths(runs: list[dict[str, Any]]) -> list[str]:
    """The data paths the finished runs report ("not recorded" for runs that predate the field)."""
    return sorted({str(r.get("data_path") or "not recorded") for r in _done(runs)})


def speed_check(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the arms of one speed part may be compared: one training transform and one data path in all of them."""
    same_tf, paths = transforms_identical(runs), data_paths(runs)
    why = []
    if same_tf is False:
        why.append("the arms built different training transforms")
    if len(paths) > 1:
        why.append(f"the arms read their data differently ({', '.join(paths)})")
    return {"transforms_identical": same_tf, "data_paths": paths, "comparable": not why, "why": "; ".join(why)}


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values), "values": values}


def _mean_std(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def _done(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("status") == "done"]


def _why_not(runs: list[dict[str, Any]]) -> Optional[str]:
    """The status and reason of an arm none of whose runs finished."""
    if not runs or _done(runs):
        return None
    r = runs[0]
    return f"{r.get('status', 'failed')}: {r.get('reason') or r.get('error') or 'no result'}"


# ----------------------------------------------------------------------------- summary


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Medians, spreads, ratios within the invocation, mean ± std over seeds and the targets."""
    out: dict[str, Any] = {"speed": {}, "speed_checks": {}, "accuracy": {}, "criteria": []}
    for key, part in data.get("speed", {}).items():
        teacher = part.get("teacher", key)  # keys are "<teacher>" or "<teacher> @ <px> px"
        by_arm: dict[str, Any] = {}
        runs = part["runs"]
        check = out["speed_checks"][key] = speed_check(runs)
        for arm in _arms(runs):
            arm_runs = [r for r in runs if r["arm"] == arm]
            ok = [r for r in _done(arm_runs) if timeable(r)]
            if not ok:
                by_arm[arm] = {"status": _why_not(arm_runs) or f"not timed: fewer than {WARMUP_EPOCHS + 1} epochs per run"}
                continue
            by_arm[arm] = {"status": "done", **_rates(ok)}
        for arm, s in by_arm.items():
            if s["status"] != "done" or not check["comparable"]:
                continue
            for base in BASELINES:
                b = by_arm.get(base, {})
                if b.get("status") != "done":
                    continue
                s[f"x_{base}"] = s["loop"]["median"] / b["loop"]["median"]
                per_repeat = [
                    loop_rate(a) / loop_rate(p)
                    for a in _done([r for r in runs if r["arm"] == arm])
                    for p in _done([r for r in runs if r["arm"] == base])
                    if a["repeat"] == p["repeat"]
                ]
                s[f"x_{base}_per_repeat"] = _spread(per_repeat) if per_repeat else None
        out["speed"][key] = by_arm
        target = SPEED_TARGETS.get(teacher)
        if target is not None:
            for base in BASELINES:
                out["criteria"].append(_speed_criterion(by_arm, key, base, target, check))

    acc = data.get("accuracy") or {}
    if acc.get("runs"):
        for arm in _arms(acc["runs"]):
            arm_runs = [r for r in acc["runs"] if r["arm"] == arm]
            ok = [r for r in _done(arm_runs) if r.get("test_acc") is not None]
            out["accuracy"][arm] = (
                {"status": "done", "test_acc": _mean_std([100 * r["test_acc"] for r in ok]), "seeds": [r["seed"] for r in ok], **_rates(ok)}
                if ok
                else {"status": _why_not(arm_runs) or "no test accuracy"}
            )
        if any(arm in out["accuracy"] for arm in ("online", "cached", "replay")):
            out["criteria"] += _accuracy_criteria(out["accuracy"])
        teacher = (acc.get("teacher") or {}).get("test_acc")
        out["teacher_test_acc"] = None if teacher is None else 100 * teacher
        out["per_seed"] = _per_seed(acc["runs"])
        _transfer_efficiency(out["accuracy"], out["per_seed"], out["teacher_test_acc"])
        out["paired"] = paired_by_seed(acc["runs"])
        out["losses"] = _where_cann_loses(out["accuracy"], {a: i.get("label", a) for a, i in data.get("arms", {}).items()}, out["paired"])
    return out


def _kept_line(runs: list[dict[str, Any]], arms_info: dict[str, Any]) -> str:
    """Which runs an earlier invocation made (`--resume` kept them: same spec), so the page never passes them off as new."""
    kept: dict[str, list[int]] = {}
    for r in runs:
        if r.get("resumed") and r.get("status") == "done":
            kept.setdefault(r["arm"], []).append(int(r["seed"]))
    if not kept:
        return ""
    parts = [f"{arms_info.get(a, {}).get('label', a)} (seeds {', '.join(map(str, sorted(seeds)))})" for a, seeds in kept.items()]
    return " Kept from an earlier invocation with the same spec (`--resume`), not rerun by this one: " + "; ".join(parts) + "."


def _comparisons(arms: list[str]) -> list[tuple[str, str]]:
    """(A, B) pairs the page tests per seed: every arm against the student alone, cann-distill's headline arms
    against its own CE-only baseline, and the headline arms against each peer."""
    pairs = [(a, "student") for a in arms if a != "student" and "student" in arms]
    pairs += [(c, "baseline") for c in HEADLINE if c in arms and "baseline" in arms]
    pairs += [(c, peer) for c in HEADLINE if c in arms for peer in arms if peer not in (*CANN_ARMS, *REFERENCES) and _same_budget(c, peer)]
    return pairs


def paired_by_seed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exact McNemar test (`cann_distill.reporting.measures.paired_difference`, the rule the report and
    `--strict` use) of arm A against arm B per seed, on the same test images. Runs without per-image
    predictions (made before they were recorded) or whose targets do not line up are left out."""
    import numpy as np

    from cann_distill.reporting.measures import paired_difference

    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for r in _done(runs):
        if r.get("test_pred") is not None and r.get("test_target") is not None:
            by_seed.setdefault(int(r["seed"]), {})[r["arm"]] = r
    rows = []
    for seed, arms in sorted(by_seed.items()):
        for a, b in _comparisons([x for x in ARM_ORDER if x in arms]):
            ra, rb = arms[a], arms[b]
            if ra["test_target"] != rb["test_target"]:
                rows.append({"seed": seed, "a": a, "b": b, "verdict": "not paired", "reason": "the test images are in a different order"})
                continue
            p = paired_difference(np.array(ra["test_target"]), np.array(ra["test_pred"]), np.array(rb["test_pred"]))
            rows.append({"seed": seed, "a": a, "b": b, **p})
    return rows


def pooled_over_seeds(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (A, B) pair's per-seed paired tests pooled into one exact McNemar test
    (`cann_distill.reporting.measures.paired_counts`): the images only A gets right and those only B gets
    right, summed over seeds (each seed's test set is the same images, scored by that seed's two models). It
    asks whether A and B differ over all the runs together, beyond the test images' noise; the spread between
    seeds is what the mean ± std columns show."""
    from cann_distill.reporting.measures import paired_counts

    sums: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if r.get("verdict") != "not paired":
            a_only, b_only, n, seeds = sums.setdefault((r["a"], r["b"]), [0, 0, 0, 0])
            sums[(r["a"], r["b"])] = [a_only + r["a_only"], b_only + r["b_only"], n + r["n"], seeds + 1]
    return {pair: {**paired_counts(a_only, b_only, n), "seeds": seeds} for pair, (a_only, b_only, n, seeds) in sums.items()}


def _per_seed(runs: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Test top-1 (%) per seed and arm, finished runs only."""
    table: dict[int, dict[str, float]] = {}
    for r in _done(runs):
        if r.get("test_acc") is not None:
            table.setdefault(int(r["seed"]), {})[r["arm"]] = 100 * r["test_acc"]
    return dict(sorted(table.items()))


def transfer_efficiency(arm: float, student: float, teacher: float) -> Optional[float]:
    """(arm − student) / (teacher − student): 1 the teacher's accuracy reached, 0 no better than the student alone."""
    return None if teacher == student else (arm - student) / (teacher - student)


def _transfer_efficiency(acc: dict[str, Any], per_seed: dict[int, dict[str, float]], teacher: Optional[float]) -> None:
    """Each arm's TE per seed against the student arm of the same seed and the one teacher (`te`), and against
    cann-distill's baseline arm of the same seed (`te_vs_baseline`) when the run has one; mean ± std over seeds."""
    if teacher is None:
        return
    for arm, a in acc.items():
        if a.get("status") != "done":
            continue
        for ref, key in (("student", "te"), ("baseline", "te_vs_baseline")):
            if ref not in acc:
                continue
            te = {seed: transfer_efficiency(row[arm], row[ref], teacher) for seed, row in per_seed.items() if arm in row and ref in row}
            a[f"{key}_per_seed"] = te
            values = [v for v in te.values() if v is not None]
            if values:
                a[key] = _mean_std(values)


def _where_cann_loses(acc: dict[str, Any], labels: dict[str, str], paired: Optional[list[dict[str, Any]]] = None) -> list[str]:
    """One line per arm whose mean test top-1 is above cann-distill's default or patient arm: by more than the
    seeds' spread (the larger of the two arms' sample std over seeds; 0 with one seed, then any lead counts) or
    inside it, with what the paired tests (`paired_by_seed` rows) say: pooled over seeds, and the seeds where
    cann-distill is worse."""
    rows = paired or []
    pooled = pooled_over_seeds(rows)
    lines = []
    for cann in HEADLINE:
        c = acc.get(cann, {})
        if c.get("status") != "done":
            continue
        for arm, a in acc.items():
            if arm in CANN_ARMS or a.get("status") != "done" or not _same_budget(cann, arm):
                continue
            lead = a["test_acc"]["mean"] - c["test_acc"]["mean"]
            if lead <= 0:
                continue
            spread = max(a["test_acc"]["std"], c["test_acc"]["std"])
            who, whom = labels.get(arm, arm), labels.get(cann, "cann-distill " + cann)
            line = (
                f"{who} beats {whom} by {lead:.2f} pt test top-1 (mean over {a['test_acc']['n']} seed(s); spread {spread:.2f} pt)"
                if lead > spread
                else f"{who} is above {whom} by {lead:.2f} pt on the mean, inside the seeds' spread ({spread:.2f} pt)"
            )
            if (both := pooled.get((cann, arm))) is not None and both["seeds"] > 1:
                line += f"; pooled paired test over {both['seeds']} seeds: {both['verdict']} (p={both['p_value']:.2g})"
            worse = [r["seed"] for r in rows if (r["a"], r["b"]) == (cann, arm) and r.get("verdict") == "worse"]
            if worse:
                line += f"; {whom} is worse by the paired test in seed(s) {', '.join(map(str, worse))}"
            lines.append(line)
    return lines


def _rates(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Loop samples/s, one-time seconds, amortised samples/s and seconds per student over the finished runs that can
    be timed (None when none can), with what they trained on."""
    timed = [r for r in runs if timeable(r)]

    def spread(f: Any) -> Optional[dict[str, Any]]:
        return _spread([f(r) for r in timed]) if timed else None

    return {
        "loop": spread(loop_rate),
        "one_time_seconds": spread(one_time_seconds),
        "amortised": spread(amortised_rate),
        "student_seconds": spread(student_seconds),
        "end_to_end_seconds": spread(end_to_end_seconds),
        "teacher_targets": _targets(runs),
        "notes": sorted({n for r in runs for n in r.get("notes", [])}),
    }


def _targets(runs: list[dict[str, Any]]) -> list[str]:
    """Where the runs' teacher targets came from, as the arms reported it, and whether they trained without augmentation."""
    return sorted({str(r.get("teacher_targets")) + (", no augmentation" if r.get("augmented") is False else "") for r in runs})


def _arms(runs: list[dict[str, Any]]) -> list[str]:
    seen = {r["arm"] for r in runs}
    return [a for a in ARM_ORDER if a in seen] + sorted(seen - set(ARM_ORDER))


def _criterion(what: str, value: Optional[float], target: str, passed: Optional[bool], why: str = "") -> dict[str, Any]:
    return {
        "what": what,
        "value": value,
        "target": target,
        "status": "n/a" if passed is None else ("pass" if passed else "fail"),
        "why": why,
    }


def _speed_criterion(by_arm: dict[str, Any], teacher: str, base: str, target: float, check: dict[str, Any]) -> dict[str, Any]:
    what = f"replay samples/s ÷ {base}, teacher {teacher}"
    if not check["comparable"]:
        return _criterion(what, None, f"≥ {target:g}×", None, f"not comparable: {check['why']}")
    missing = [a for a in ("replay", base) if by_arm.get(a, {}).get("status") != "done"]
    if missing:
        return _criterion(
            what, None, f"≥ {target:g}×", None, "; ".join(f"{a} {by_arm.get(a, {}).get('status', 'not run')}" for a in missing)
        )
    ratio = by_arm["replay"][f"x_{base}"]
    return _criterion(what, ratio, f"≥ {target:g}×", ratio >= target)


def _accuracy_criteria(acc: dict[str, Any]) -> list[dict[str, Any]]:
    def mean(arm: str) -> Optional[float]:
        a = acc.get(arm, {})
        return a["test_acc"]["mean"] if a.get("status") == "done" else None

    def missing(*arms: str) -> str:
        return "; ".join(f"{a} {acc.get(a, {}).get('status', 'not run')}" for a in arms if mean(a) is None)

    replay, online, cached = mean("replay"), mean("online"), mean("cached")
    gap = None if replay is None or online is None else replay - online
    lead = None if replay is None or cached is None else replay - cached
    return [
        _criterion(
            "replay − online test top-1 (pt, mean over seeds)",
            gap,
            f"≥ −{ACCURACY_TOLERANCE_PT} pt",
            None if gap is None else gap >= -ACCURACY_TOLERANCE_PT,
            missing("replay", "online"),
        ),
        _criterion(
            "replay − cached test top-1 (pt, augmentation on)",
            lead,
            "> 0 pt",
            None if lead is None else lead > 0,
            missing("replay", "cached"),
        ),
    ]


# ----------------------------------------------------------------------------- markdown


def _paired_lines(rows: list[dict[str, Any]], arms_info: dict[str, Any]) -> list[str]:
    """The per-seed paired tests as a table, one row per (A, B) pair, one column per seed."""
    if not rows:
        return [
            "### Paired per seed",
            "",
            "Not available: these runs did not record per-image test predictions.",
            "",
        ]

    def label(arm: str) -> str:
        return str(arms_info.get(arm, {}).get("label", arm))

    seeds = sorted({r["seed"] for r in rows})
    pairs = list(dict.fromkeys((r["a"], r["b"]) for r in rows))
    cells = {(r["seed"], r["a"], r["b"]): r for r in rows}

    def cell(r: Optional[dict[str, Any]]) -> str:
        if r is None:
            return "–"
        if r["verdict"] == "not paired":
            return "not paired"
        return f"{100 * r['difference']:+.2f} pt, p={r['p_value']:.2g} ({r['verdict']})"

    pooled = pooled_over_seeds(rows) if len(seeds) > 1 else {}
    table = [
        [f"{label(a)} vs {label(b)}"] + [cell(cells.get((seed, a, b))) for seed in seeds] + ([cell(pooled.get((a, b)))] if pooled else [])
        for a, b in pairs
    ]
    pooled_text = (
        " The last column pools the seeds: the images only A gets right and those only B gets right, summed over "
        "seeds, in one exact McNemar test (whether A and B differ over all the runs together). It counts test images, "
        "not training runs: a small p says these runs' predictions differ, not that another set of training runs "
        "would order A and B the same way; that is what the spread between seeds (the mean ± std above) shows, and "
        "with a handful of seeds it is wide (cann-distill's packaged default job: the CE-only student alone lands "
        "anywhere from 61% to 82% test over three seeds and two thread counts, docs/getting-started.md)."
        if pooled
        else ""
    )
    return (
        [
            "### Paired per seed",
            "",
            "A − B in test top-1 on the same test images, per seed, with the exact McNemar test (the rule cann-distill's "
            "report and `--strict` use): `better` / `worse` when p < 0.05, `tie` within the noise." + pooled_text,
            "",
        ]
        + _table(["A vs B"] + [f"seed {seed}" for seed in seeds] + (["all seeds (pooled)"] if pooled else []), table)
        + [""]
    )


def _num(x: Optional[float], digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(_cell, r)) + " |" for r in rows]


def _speed_rows(by_arm: dict[str, Any], arms_info: dict[str, Any]) -> list[list[str]]:
    rows = []
    for arm, s in by_arm.items():
        label = arms_info.get(arm, {}).get("label", arm)
        if s["status"] != "done":
            rows.append([label, s["status"]] + ["–"] * 6)
            continue
        loop = s["loop"]
        ratios = []
        for base in BASELINES:
            r = s.get(f"x_{base}")
            per = s.get(f"x_{base}_per_repeat")
            ratios.append("–" if r is None else f"{r:.2f}×" + (f" ({per['min']:.2f}–{per['max']:.2f})" if per and per["n"] > 1 else ""))
        rows.append(
            [
                label,
                "; ".join(s["teacher_targets"]),
                _num(loop["median"]),
                f"{_num(loop['min'])}–{_num(loop['max'])} (n={loop['n']})",
                *ratios,
                *_one_time_cells(s),
            ]
        )
    return rows


def _te_cell(te: Optional[dict[str, Any]]) -> str:
    return "–" if not te else f"{te['mean']:.2f} ± {te['std']:.2f}"


def _median(s: dict[str, Any], key: str) -> Optional[float]:
    spread = s.get(key)
    return None if spread is None else spread["median"]


def _one_time_cells(s: dict[str, Any]) -> list[str]:
    one_time = _median(s, "one_time_seconds")
    return [_num(one_time, 2) if one_time else "–", _num(_median(s, "amortised"))]


def _times(base: Optional[float], arm: Optional[float]) -> str:
    """How many times faster `arm` is than `base` (seconds, lower is faster)."""
    return "–" if base is None or arm is None or arm <= 0 else f"{base / arm:.2f}×"


def _headline_rows(key: str, by_arm: dict[str, Any], check: dict[str, Any], arms_info: dict[str, Any]) -> list[list[str]]:
    """The headline rows of one speed part: the baselines, online (same work per step) and replay / cached (cost per
    extra student, with one student end to end beside it), or one row saying why the arms are not comparable."""
    if not check["comparable"]:
        return [[key, "**not comparable**", check["why"] + "; no ratio reported (see the JSON)"] + ["–"] * 7]
    done = {a: s for a, s in by_arm.items() if s.get("status") == "done"}
    base = {b: (_median(done[b], "student_seconds"), _median(done[b], "end_to_end_seconds")) for b in BASELINES if b in done}
    rows = []
    for arm, what in PER_STUDENT.items():
        if arm not in by_arm:
            continue
        label = arms_info.get(arm, {}).get("label", arm)
        if arm not in done:
            rows.append([key, label, by_arm[arm]["status"]] + ["–"] * 7)
            continue
        s = done[arm]
        per, e2e = _median(s, "student_seconds"), _median(s, "end_to_end_seconds")
        rows.append(
            [
                key,
                label,
                what,
                _num(_median(s, "loop")),
                _num(per),
                *[_times(base.get(b, (None, None))[0], per) if arm not in BASELINES else "–" for b in BASELINES],
                _num(e2e),
                *[_times(base.get(b, (None, None))[1], e2e) if arm not in BASELINES else "–" for b in BASELINES],
            ]
        )
    return rows


def _headline(s: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """The speed part's headline: what is comparable, and how."""
    sp = data.get("settings", {}).get("speed", {})
    epochs = sp.get("epochs")
    rows = [row for key, by_arm in s["speed"].items() for row in _headline_rows(key, by_arm, s["speed_checks"][key], data.get("arms", {}))]
    return (
        [
            "### Headline: what is comparable",
            "",
            "`online` does the same work per step as the plain loop and torchdistill (a teacher forward on every "
            "augmented batch), so its time is compared with theirs directly. `replay` and `cached` skip the teacher "
            "forward once select has stored the teacher's outputs: their *seconds per student* is the cost of every "
            "extra student trained from those outputs, and *one student end to end* adds select's labelling (the "
            f"one-time stage) for the first. Seconds are for the run's {epochs} epoch(s) at each arm's steady loop rate; "
            "× is the baseline's seconds ÷ the arm's (higher: faster).",
            "",
        ]
        + _table(
            [
                "teacher",
                "arm",
                "compared as",
                "samples/s (median)",
                f"seconds per student ({epochs} epochs)",
                "× plain",
                "× torchdistill",
                "one student end to end (s, select included)",
                "× plain",
                "× torchdistill",
            ],
            rows,
        )
        + [""]
    )


def _data_path_text(st: dict[str, Any]) -> str:
    path = st.get("speed", {}).get("data_path")
    return NOT_RECORDED if path is None else DATA_PATHS.get(path, str(path))


def _data_line(d: dict[str, Any], st: dict[str, Any]) -> str:
    """The setup's data bullet: an ImageFolder tree read in place, or the digits export."""
    sz = d.get("sizes", {})
    reads = "every arm reads and decodes those files (cann-distill `data.source: imagefolder`, the others torchvision `ImageFolder`)."
    if d.get("source") == "imagefolder":
        stamp = (
            f" The files' sha256 is `{d['files_sha256'][:16]}…` (written with Pillow {d.get('built_with_pillow') or '?'}; "
            "a set rebuilt with another Pillow can hold other pixels)."
            if d.get("files_sha256")
            else ""
        )
        return (
            f"- **Data**: the ImageFolder tree `{d.get('root')}` read as it is ({d.get('classes')} classes; train "
            f"{sz.get('train')}, val {sz.get('val')}, test {sz.get('test')} images) at {d.get('image_size')} px; " + reads + stamp
        )
    other_sizes = [p for p in st.get("speed", {}).get("sizes", []) if p != d.get("image_size")]
    return (
        f"- **Data**: scikit-learn digits split as cann-distill's `digits` source splits it (val {d.get('val_fraction')}, "
        f"test {d.get('test_fraction')}, split seed {d.get('split_seed')}"
        + (f", {d.get('max_samples')} samples" if d.get("max_samples") else "")
        + f"), upsampled to {d.get('image_size')} px"
        + (
            f" (the speed part also at {', '.join(str(p) for p in other_sizes)} px, the same images upsampled further)"
            if other_sizes
            else ""
        )
        + f" and exported once as PNG to an ImageFolder tree (train {sz.get('train')}, val {sz.get('val')}, "
        f"test {sz.get('test')}); " + reads
    )


def _portable(command: str) -> str:
    """The command as a reader would type it: an interpreter given by absolute path is shown as `python`."""
    first, _, rest = command.partition(" ")
    return f"python {rest}" if first.startswith("/") and Path(first).name.startswith("python") else command


def render(data: dict[str, Any]) -> str:
    """docs/benchmarks.md from the benchmark JSON."""
    s = summarize(data)
    st = data.get("settings", {})
    arms_info = data.get("arms", {})
    m, v = data.get("machine", {}), data.get("versions", {})
    lines = ["# Benchmarks", ""]
    if data.get("smoke"):
        lines += [
            f"> **Smoke run — not a measurement.** Made with `--quick` ({data.get('quick_note', 'tiny settings')}) on a "
            "shared machine to check that every arm runs end to end. Regenerate this page from the full run "
            "on a quiet machine (command below, without `--quick`).",
            "",
        ]
    lines += [
        f"Generated by `scripts/bench/bench.py` from `{data.get('out', 'the JSON')}`; nothing on this page is typed by hand "
        f"(`--render` rebuilds it from the JSON).",
        "",
    ]
    commit = str(v.get("cann-distill commit", "?"))
    clean = (
        f"commit `{commit}`, clean (the working tree matched the commit)"
        if "uncommitted" not in commit and "not clean" not in commit  # "uncommitted": how older JSONs marked it
        else f"commit `{commit.split()[0]}`, **not clean** (the working tree differed from the commit)"
    )
    lines += [
        "## Command",
        "",
        "```",
        _portable(data.get("command", "?")),
        "```",
        "",
        f"Started {data.get('date', '?')}, {_num(data.get('wall_seconds'), 0)} s wall in all; cann-distill {clean}.",
        "",
    ]
    flags = m.get("flags", {})
    lines += (
        ["## Machine", ""]
        + _table(
            ["", ""],
            [
                ["CPU", f"{m.get('cpu_model', '?')} ({m.get('machine', '?')})"],
                ["cores", f"{m.get('cores_usable', '?')} usable of {m.get('cores_total', '?')}"],
                ["CPU flags", ", ".join(f"{k} {'yes' if on else 'no'}" for k, on in flags.items()) or "?"],
                ["memory", f"{_num(m.get('memory_gib'))} GiB"],
                ["load average (1 min) at start / end", f"{_num(m.get('load_start'), 2)} / {_num(m.get('load_end'), 2)}"],
                ["OS", m.get("os", "?")],
            ],
        )
        + [""]
    )
    lines += ["## Versions", ""] + _table(["package", "version"], [[k, str(val)] for k, val in v.items()]) + [""]

    lines += ["## Setup (the same for every arm)", ""]
    d = st.get("data", {})
    lines += [_data_line(d, st)]
    lines += [
        f"- **Transforms**: timm `create_transform`, training `{st.get('transforms', {}).get('train')}`, evaluation "
        f"`{st.get('transforms', {}).get('eval')}`. The transform each arm built was compared within each part: "
        f"{'identical in every arm' if data.get('transforms_identical') else 'NOT identical (see the JSON)'}.",
        f"- **Training**: batch {st.get('batch_size')} (last partial batch dropped), {st.get('optimizer_text')}, "
        f"loss {st.get('loss_text')}, {st.get('threads')} torch threads, {st.get('workers')} DataLoader worker(s) "
        "(persistent), every arm in its own fresh process.",
        f"- **Student** `{st.get('student')}`.",
        "",
    ]
    lines += ["**Arms**", ""] + [f"- **{info.get('label', arm)}**: {info.get('text', '')}" for arm, info in arms_info.items()] + [""]

    if s["speed"]:
        sp = st.get("speed", {})
        lines += [
            "## Speed",
            "",
            f"Training-loop samples/s (data loading, teacher, student, backward, step; evaluation excluded), "
            f"{sp.get('epochs')} epoch(s) per run with the first left out as warm-up in every arm, arms interleaved with the order "
            f"rotated each repeat, {sp.get('repeats')} repeat(s). Teachers untrained (timing only). Ratios are of medians "
            "from this one invocation (range: per-repeat ratios). *One-time* is cann-distill's select stage (teacher pass "
            "over the training split; for `replay` also the stored augmentation draws), paid once per run; *amortised* "
            f"spreads it over the run's {sp.get('epochs')} epoch(s) at the steady loop rate (the accuracy part "
            "reports it over its longer runs).",
            "",
            f"**Data path**: {_data_path_text(st)}.",
            "",
        ]
        lines += _headline(s, data)
        for key, by_arm in s["speed"].items():
            part = data["speed"][key]
            px = part.get("image_size", st.get("data", {}).get("image_size"))
            lines += [f"### teacher `{part.get('teacher', key)}` → student `{st.get('student')}`, {px} px", ""]
            if not (check := s["speed_checks"][key])["comparable"]:
                lines += [f"**Not comparable**: {check['why']}; no ratio is reported.", ""]
            lines += _table(
                [
                    "arm",
                    "teacher targets",
                    "samples/s (median)",
                    "range",
                    "× plain",
                    "× torchdistill",
                    "one-time (s)",
                    "amortised samples/s",
                ],
                _speed_rows(by_arm, arms_info),
            ) + [""]

    if s["accuracy"]:
        a = st.get("accuracy", {})
        t = (data.get("accuracy") or {}).get("teacher", {})
        lines += [
            "## Accuracy",
            "",
            f"Teacher `{a.get('teacher')}` trained once with cann-distill's teacher stage ({t.get('epochs')} epochs, "
            f"test {_num(100 * t['test_acc'], 2) if t.get('test_acc') is not None else '–'}%) and given to every arm; student "
            f"`{st.get('student')}`, {a.get('epochs')} epochs"
            + (
                f" ({st['patient_factor'] * a.get('epochs', 0)} for the patient arm)"
                if "patient" in s["accuracy"] and st.get("patient_factor")
                else ""
            )
            + (
                f" ({int(round(st['plain_long_factor'] * a.get('epochs', 0)))} for the peers given the patient arm's time)"
                if any(p in s["accuracy"] for p in LONG_PEERS) and st.get("plain_long_factor")
                else ""
            )
            + f", augmentation on (unless the teacher-targets column says otherwise), seeds "
            f"{a.get('seeds')}. Test top-1 of the last epoch's weights (nothing chosen on the test split); std is the "
            "sample std over seeds.",
            "",
        ]
        rows = []
        with_baseline = s["accuracy"].get("baseline", {}).get("status") == "done"
        for arm, r in s["accuracy"].items():
            label = arms_info.get(arm, {}).get("label", arm)
            if r["status"] != "done":
                rows.append([label, r["status"]] + ["–"] * (7 if with_baseline else 6))
                continue
            ta = r["test_acc"]
            rows.append(
                [
                    label,
                    f"{ta['mean']:.2f} ± {ta['std']:.2f}%",
                    ", ".join(f"{x:.2f}" for x in ta["values"]),
                    _te_cell(r.get("te")),
                    *([_te_cell(r.get("te_vs_baseline"))] if with_baseline else []),
                    "; ".join(r["teacher_targets"]),
                    _num(_median(r, "loop")),
                    *_one_time_cells(r),
                ]
            )
        lines += _table(
            [
                "arm",
                "test top-1 (mean ± std)",
                "per seed (%)",
                "TE (mean ± std)",
                *(["TE vs cann-distill's baseline"] if with_baseline else []),
                "teacher targets",
                "loop samples/s (median)",
                "one-time (s)",
                "amortised samples/s",
            ],
            rows,
        ) + [""]
        lines += [
            f"Teacher test top-1: {_num(s.get('teacher_test_acc'), 2)}%. **TE** (transfer efficiency) per seed = (arm − "
            "student) / (teacher − student), with the student arm of the same seed: 0 is no better than the student trained "
            "alone, 1 reaches the teacher; mean ± sample std over seeds."
            + ("" if "student" in s["accuracy"] else " No student arm in this run, so no TE.")
            + (
                " **TE vs cann-distill's baseline** uses cann-distill's own CE-only baseline stage of the same seed in place of "
                "the student arm: the reference `cann-distill report` and `--strict` use."
                if with_baseline
                else ""
            )
            + _kept_line((data.get("accuracy") or {}).get("runs", []), arms_info),
            "",
        ]
        arms = list(s["accuracy"])
        seed_rows = [
            [str(seed)]
            + [
                (
                    f"{row[a]:.2f}"
                    + (
                        f" (TE {te:.2f})"
                        if (te := s["accuracy"][a].get("te_per_seed", {}).get(seed)) is not None and a != "student"
                        else ""
                    )
                    + (
                        f" (vs baseline {tb:.2f})"
                        if (tb := s["accuracy"][a].get("te_vs_baseline_per_seed", {}).get(seed)) is not None and a not in REFERENCES
                        else ""
                    )
                )
                if a in row
                else "–"
                for a in arms
            ]
            for seed, row in s.get("per_seed", {}).items()
        ]
        lines += ["### Per seed", "", "Test top-1 (%) and TE of each arm, by seed.", ""]
        lines += _table(["seed"] + [arms_info.get(a, {}).get("label", a) for a in arms], seed_rows) + [""]
        lines += _paired_lines(s.get("paired", []), arms_info)
        lines += [
            "### Where cann-distill loses",
            "",
            "Generated from the numbers above: every arm that is not a cann-distill distillation arm (the peers, and "
            "cann-distill's own CE-only baseline when the run has it) whose mean test top-1 is above cann-distill's "
            "`default` or `patient` arm given the same budget, against the seeds' spread (the larger of the two arms' std; "
            "with one seed, any lead counts as beyond it) and with the paired tests of the table above.",
            "",
        ]
        headline = [a for a in ("default", "patient") if s["accuracy"].get(a, {}).get("status") == "done"]
        if not headline:
            lines += ["- Not measured: neither cann-distill default nor patient finished in this run.", ""]
        else:
            lines += [f"- {ln}" for ln in s.get("losses", [])] or [
                f"- No arm is above {' or '.join(arms_info.get(a, {}).get('label', a) for a in headline)} on the mean."
            ]
            lines += [""]

    if s["criteria"]:
        lines += ["## Speed and accuracy targets", ""]
        rows = [[c["what"], c["target"], _num(c["value"], 2), c["status"] + (f" ({c['why']})" if c["why"] else "")] for c in s["criteria"]]
        lines += _table(["criterion", "target", "measured", "status"], rows) + [""]

    notes = sorted(
        {(arm, n) for part in (s["speed"].values()) for arm, r in part.items() for n in r.get("notes", [])}
        | {(arm, n) for arm, r in s["accuracy"].items() for n in r.get("notes", [])}
    )
    if notes or data.get("differences"):
        lines += (
            ["## Where the arms differ", ""]
            + [f"- {d}" for d in data.get("differences", [])]
            + [f"- **{arms_info.get(arm, {}).get('label', arm)}**: {n}" for arm, n in notes]
            + [""]
        )
    if data.get("torchdistill_config"):
        lines += [
            "## torchdistill config used",
            "",
            "Written by `scripts/bench/arm_torchdistill.py` (one per run; this one from the first run; paths are the run's):",
            "",
            "```yaml",
            data["torchdistill_config"].rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)
