#!/bin/bash
# The defaults grid (defaults_grid.py) on one GPU machine with many cores: both photo sets' teachers are trained there
# (30 epochs on nature40, 15 on ubuntu15, as the CPU pages), then one defaults_grid.py per (set, seed), all at once,
# each run with one torch thread and one loader worker; after DEADLINE_S seconds the finished rows are gathered.
# PHOTOS is a tar.xz of the nature40/ and ubuntu15/ trees photo_sets.py builds.
# usage: bash scripts/bench/defaults_grid_gpu.sh PHOTOS OUTDIR DEADLINE_S SEEDS ARMS [PY]
# e.g.:  bash scripts/bench/defaults_grid_gpu.sh photos.tar.xz out 490 3,4,5,6,7,8 warm1,ls,ema_best,dkd2,dkd8,ls_w1
PHOTOS=$1; OUTD=$2; DEADLINE=$3; SEEDS=$4; ARMS=$5; PY=${6:-python3}
START=$(date +%s)
W=${TMPDIR:-/tmp}/defaults_grid_gpu; rm -rf $W; mkdir -p $W/ps $W/g
tar xJf "$PHOTOS" -C $W/ps || exit 3
R=scripts/bench/recipes/mobilenetv3_small_050_from_resnet18_photos.yaml
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
$PY -c "import torch, timm, pydantic, cann_distill; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'timm', timm.__version__)" || exit 4
TE_N=${TE_N:-30}; TE_U=${TE_U:-15}; DE=${DE:-}
extra=(); [ -n "$DE" ] && extra=(--set distill.epochs=$DE)
$PY -m cann_distill teacher $R --run-dir $W/t_nature40 --set data.root=$W/ps/nature40 --set teacher.train.epochs=$TE_N --set data.num_workers=2 > $W/t_nature40.log 2>&1 &
$PY -m cann_distill teacher $R --run-dir $W/t_ubuntu15 --set data.root=$W/ps/ubuntu15 --set teacher.train.epochs=$TE_U --set data.num_workers=2 > $W/t_ubuntu15.log 2>&1 &
wait
echo "teachers done at $(( $(date +%s) - START )) s"; tail -n 3 $W/t_*.log
for s in nature40 ubuntu15; do
  [ -f $W/t_$s/teacher/teacher.pt ] || { echo "no teacher for $s"; exit 5; }
  for seed in ${SEEDS//,/ }; do
    $PY scripts/bench/defaults_grid.py --recipe $R --set data.root=$W/ps/$s --set data.num_workers=1 "${extra[@]}" \
      --teacher $W/t_$s/teacher/teacher.pt --seeds $seed --arms $ARMS --out $W/g/${s}_s$seed.jsonl --work-dir $W/g/${s}_s$seed > $W/g/${s}_s$seed.log 2>&1 &
  done
done
while [ $(( $(date +%s) - START )) -lt $DEADLINE ] && [ -n "$(jobs -r)" ]; do sleep 5; done
echo "grid stopped at $(( $(date +%s) - START )) s; running: $(jobs -r | wc -l)"
$PY - "$W" "$OUTD" <<'EOF'
import json, pathlib, sys
w, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
rows = []
for f in sorted((w / "g").glob("*.jsonl")):
    for line in f.read_text().splitlines():
        if line.strip():
            rows.append({"set": f.stem.rsplit("_", 1)[0], **json.loads(line)})
for t in ("nature40", "ubuntu15"):
    m = w / f"t_{t}" / "teacher" / "metrics.json"
    if m.exists():
        d = json.loads(m.read_text())
        rows.append({"set": t, "name": "teacher", "val": d.get("val_acc"), "test": d.get("test_acc")})
(out / "gpu_grid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
print(len(rows), "rows")
for r in rows:
    print(r["set"], r["name"], r.get("val"), r.get("test"), r.get("secs"), r.get("error", ""))
EOF
tail -n 2 $W/g/*.log | tail -n 40
