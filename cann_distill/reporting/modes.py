"""The report's account of the distillation mode (docs/guides/modes.md): each teacher's accuracy and agreement with
the student, how many labelled and unlabelled images distill used, every peer of mutual learning and the one
exported, the hops of a teacher-assistant chain. `report.json["modes"]` holds it; the HTML shows it as one section
(absent when the run used one teacher, labelled images and one student)."""

from __future__ import annotations

from typing import Any, Optional


def modes_report(teacher: Optional[dict[str, Any]], distill: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """What report.json says about the mode, from the teacher and distill stages' metrics; None for a plain run."""
    d = distill or {}
    out: dict[str, Any] = {}
    if d.get("teachers"):
        out["teachers"] = {
            "rule": (d.get("ensemble") or {}).get("rule"),
            "teachers": d["teachers"],
            "combined": d.get("combined"),
            "chosen_share": (d.get("ensemble") or {}).get("chosen_share"),
        }
    elif (teacher or {}).get("teachers"):  # distill has not run yet: the teachers' own numbers
        out["teachers"] = {"rule": None, "teachers": teacher["teachers"], "combined": None, "chosen_share": None}  # type: ignore[index]
    if (d.get("data") or {}).get("unlabelled") is not None:
        out["unlabeled"] = d["data"]
    if d.get("peers"):
        out["mutual"] = {"peers": d["peers"], "best_peer": d.get("best_peer"), "exported": d.get("arch")}
    if d.get("chain"):
        out["chain"] = d["chain"]
    return out or None


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}%"


Block = dict[str, Any]  # the report page's block (reporting/html.py renders it through its autoescaping template)


def _p(text: str, cls: str = "") -> Block:
    return {"kind": "p", "text": text, "cls": cls}


def _table(head: list[str], rows: list[list[Any]]) -> Block:
    return {"kind": "table", "head": head, "rows": [[str(c) for c in row] for row in rows], "caption": ""}


def modes_section(report: dict[str, Any], visuals: Any = None) -> Optional[list[Block]]:
    """The page blocks of report.json's `modes`, or None when the run used none of them (the section is left out)."""
    modes = report.get("modes")
    if not modes:
        return None
    parts: list[Block] = []
    if "teachers" in modes:
        t = modes["teachers"]
        split = "test" if any("test_acc" in row for row in t["teachers"]) else "val"
        rows = [
            [row["index"], row["arch"], row.get("weight"), _pct(row.get(f"{split}_acc")), _pct(row.get(f"{split}_agreement"))]
            + (["re-normalised" if row.get("renormalized") else "as the data"] if "renormalized" in row else [])
            for row in t["teachers"]
        ]
        combined = t.get("combined") or {}
        if combined:
            rows.append(["all", "weighted mean", "", _pct(combined.get(f"{split}_acc")), _pct(combined.get(f"{split}_agreement"))])
        head = ["teacher", "arch", "weight", f"{split} top-1", f"top-1 agreement with the student ({split})"]
        parts.append(_p(f"Several teachers, combined by {t.get('rule')}."))
        parts.append(_table(head + (["inputs"] if rows and len(rows[0]) > 5 else []), rows))
        if t.get("chosen_share"):
            share = ", ".join(f"teacher {k}: {_pct(v)}" for k, v in enumerate(t["chosen_share"]))
            parts.append(_p(f"Samples each teacher taught (confidence): {share}.", "note"))
    if "unlabeled" in modes:
        u = modes["unlabeled"]
        parts.append(
            _p(
                f"Distill used {u.get('labelled')} labelled and {u.get('unlabelled')} unlabelled training images "
                f"({u.get('unlabelled_skipped', 0)} unlabelled image(s) skipped as bad); on the unlabelled ones the teacher's "
                "soft outputs are the only targets."
            )
        )
    if "mutual" in modes:
        m = modes["mutual"]
        rows = [
            [p["index"], p["arch"], p.get("params"), _pct(p.get("val_acc")), _pct(p.get("test_acc")), "yes" if p.get("exported") else ""]
            for p in m["peers"]
        ]
        parts.append(_p("Mutual learning: the peer best on val is the exported student."))
        parts.append(_table(["peer", "arch", "params", "val top-1", "test top-1", "exported"], rows))
    if "chain" in modes:
        rows = [[h["hop"], h["teacher"], h["student"], h.get("student_params"), _pct(h.get("val_acc"))] for h in modes["chain"]]
        parts.append(_p("Teacher-assistant chain: each hop's distilled model teaches the next."))
        parts.append(_table(["hop", "teacher", "student", "student params", "val top-1"], rows))
    return parts
