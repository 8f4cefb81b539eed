#!/bin/bash
# $1 = offline|streaming
cd /work/main
export OMP_NUM_THREADS=1
mode=$1
flag=""; [ "$mode" = streaming ] && flag="--streaming"
for v in previous:0.5 context:0.5 context:1 context:2 context:4; do
  nov=${v%%:*}; w=${v##*:}
  .venv/bin/echo-bench fidelity --split val --limit 100 --methods cs2,per_modality --keep 0.2,0.1,0.05 --rope sync \
    --prior-novelty $nov --prior-weight $w $flag --json /work/scratch/prior/${mode}_${nov}_${w}.json > /work/scratch/prior/${mode}_${nov}_${w}.log 2>&1
done
echo done
