#!/bin/bash
cd /work/main
export OMP_NUM_THREADS=1
n=$1
s1=/work/scratch/prior/s1_$n
rm -rf $s1; cp -r /work/scratch/prior/s1 $s1
start=$(date +%s)
.venv/bin/echo-train --config configs/echo_tiny_train.yaml --stage1-dir $s1 --out /work/scratch/prior/seed$n stage2.seed=$n > /work/scratch/prior/seed$n.log 2>&1
echo "train rc=$? $(( $(date +%s) - start )) s" >> /work/scratch/prior/seed$n.log
for v in previous:0.5 context:0.5 context:1; do
  nov=${v%%:*}; w=${v##*:}
  .venv/bin/echo-bench fidelity --split val --limit 100 --methods none,cs2,per_modality --keep 1.0,0.1,0.05 --rope sync \
    --model /work/scratch/prior/seed$n --prior-novelty $nov --prior-weight $w --json /work/scratch/prior/seed${n}_${nov}_${w}.json > /work/scratch/prior/seed${n}_${nov}_${w}.log 2>&1
done
echo finished >> /work/scratch/prior/seed$n.log
