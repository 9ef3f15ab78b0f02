set -e
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2
B=target/release/acf-index
U=../shared/data/ucm-captions/dataset_ucm.json
A=../shared/data/rsicd-aid/dataset_rsicd_aid.json
date
$B model calibrate --model runs/hub24/both --dataset $U --dataset $A --quiet
$B model calibrate --model runs/hub24/ucm --dataset $U --quiet
date
for n in both ucm; do
$B eval --model runs/hub24/$n --dataset $U --split val --json --quiet --sweep hubness_prior=0.5,1,1.5,2 > runs/hub24/diag-$n-ucm.json
date
done
