"""COCO box metrics through pycocotools' COCOeval: what every detection paper quotes, computed the same way.

`mAP` is AP averaged over IoU 0.50:0.05:0.95 (COCO's primary metric), `AP50` / `AP75` at one IoU, `AP_small` /
`AP_medium` / `AP_large` over objects of area < 32^2, 32^2..96^2 and > 96^2 pixels (the image's own pixels, the
annotation's `area`), `AR100` the recall with 100 detections per image. A value COCOeval cannot compute (no
ground truth of that size: its -1) is None. Crowd regions (`iscrowd: 1`) are ignored as COCOeval does.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Optional

from cann_distill.core.errors import StageError

STATS = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
"""COCOeval.stats, in its order."""
SHOWN = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100")


def cocoeval_modules() -> tuple[Any, Any]:
    """(COCO, COCOeval) from pycocotools, or one line saying how to install it."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise StageError("task: detect needs pycocotools for its metrics: pip install 'cann-distill[detect]'") from None
    return COCO, COCOeval


def coco_metrics(gt: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Optional[float]]:
    """COCO box metrics of `results` (COCO result entries) against the checked ground truth `gt` (a COCO dict)."""
    COCO, COCOeval = cocoeval_modules()
    if not any(not a.get("iscrowd") for a in gt["annotations"]):
        return dict.fromkeys(SHOWN)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress; stdout is for --json
        truth = COCO()
        truth.dataset = copy.deepcopy(gt)
        truth.createIndex()
        if not results:  # loadRes refuses an empty list: no detection at all scores 0 wherever there is ground truth
            return _no_detections(truth, COCOeval)
        found = truth.loadRes(copy.deepcopy(results))
        ev = COCOeval(truth, found, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = dict(zip(STATS, (float(v) for v in ev.stats)))
    return {k: (None if stats[k] < 0 else stats[k]) for k in SHOWN}


def _no_detections(truth: Any, COCOeval: Any) -> dict[str, Optional[float]]:
    """0 for every metric that has ground truth, None for the others (as COCOeval would give with detections)."""
    ev = COCOeval(truth, truth, "bbox")  # only its area ranges are read
    areas = [a["area"] for a in truth.dataset["annotations"] if not a.get("iscrowd")]
    (lo_s, hi_s), (lo_m, hi_m), (lo_l, hi_l) = ev.params.areaRng[1:4]
    has = {
        "AP_small": any(lo_s <= a <= hi_s for a in areas),
        "AP_medium": any(lo_m <= a <= hi_m for a in areas),
        "AP_large": any(lo_l <= a <= hi_l for a in areas),
    }
    return {k: (0.0 if has.get(k, True) else None) for k in SHOWN}


def percent(value: Optional[float]) -> str:
    """A metric as the papers print it (AP x 100, one decimal), '-' when there is none."""
    return "-" if value is None else f"{100 * value:.1f}"
