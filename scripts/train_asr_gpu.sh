#!/bin/bash
# How systems/checkpoints/ctc-conformer was trained on a lent GPU (one H100, 16 CPU cores, offline):
# the "base" preset from scratch (job "base") beside a continuation of the previous 3.5 M-parameter
# model (job "cont", which lost: 54.3 % against 49.6 % dev WER), each fed by 7 CPU workers that
# synthesise speech. Run from the repo root: `MIN=7.5 bash scripts/train_asr_gpu.sh`. Where the
# machine lacks packages, put their wheels in .whl/ (installed to /tmp/site); $AUDIOCHAT_BENCH_CACHE
# must hold the wordfreq asset (`audiochat-bench train lm` fetches it once where PyPI is reachable).
# Checkpoints come back as tar parts under $OUT (no optimiser state).
set -u
DEVICE=${DEVICE:-cuda}; MIN=${MIN:-6.8}; WORKERS=${WORKERS:-7}; OUT=${OUT:-/tmp/out}; W=${W:-/tmp/work}
mkdir -p $OUT $W
if [ -d .whl ] && [ -z "${NOWHL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 AUDIOCHAT_BENCH_CACHE=${AUDIOCHAT_BENCH_CACHE:-$PWD/.devcache} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null; nproc
python3 -c "import torch, transformers, soundfile, soxr, jiwer, espeakng_loader, msgpack; from transformers import ParakeetForCTC; print(torch.__version__, transformers.__version__, torch.cuda.is_available())" || exit 1
python3 -m systems.asr.train --init-from systems/checkpoints/ctc-conformer --out $W/cont --device $DEVICE \
  --workers $WORKERS --threads 2 --batch-size 64 --lr 3e-3 --warmup 200 --steps 40000 --eval-every 1000 \
  --ckpt-every 1000 --log-every 50 --max-minutes $MIN --fit-steps > $OUT/cont.log 2>&1 &
python3 -m systems.asr.train --preset base --out $W/base --device $DEVICE --workers $WORKERS --threads 2 \
  --steps 40000 --max-minutes $MIN --fit-steps > $OUT/base.log 2>&1 &
wait
tail -n 3 $OUT/cont.log $OUT/base.log
for j in cont base; do
  cp $W/$j/train_log.jsonl $OUT/$j.train_log.jsonl
  tar -C $W/$j --exclude trainer_state.pt -cf $W/$j.tar ckpt && split -b 15M $W/$j.tar $OUT/$j.tar.part-
done
ls -la $OUT
