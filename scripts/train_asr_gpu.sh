#!/bin/bash
# How systems/checkpoints/ctc-conformer is trained on a lent GPU (one H100, 16 CPU cores, offline): the
# committed model continued with a fresh optimiser (`--init-from`), batches of 128, 14 CPU workers
# synthesising speech while the GPU computes the features; the schedule is fitted to MIN minutes.
# Run from the repo root: `MIN=8.6 bash scripts/train_asr_gpu.sh`. Where the machine lacks packages,
# put their wheels in .whl/ (installed to /tmp/site); $AUDIOCHAT_BENCH_CACHE must hold the wordfreq asset
# (`audiochat-bench train lm` fetches it once where PyPI is reachable). The checkpoint comes back as tar
# parts under $OUT (no optimiser state), with the log. (Session 3 ran the `base` preset from scratch
# here for 7.5 min beside a second job; that made the previous checkpoint.)
set -u
DEVICE=${DEVICE:-cuda}; MIN=${MIN:-8}; WORKERS=${WORKERS:-14}; BATCH=${BATCH:-128}; OUT=${OUT:-/tmp/out}; W=${W:-/tmp/work}
mkdir -p $OUT $W
if [ -d .whl ] && [ -z "${NOWHL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 AUDIOCHAT_BENCH_CACHE=${AUDIOCHAT_BENCH_CACHE:-$PWD/.devcache} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null; nproc
python3 -c "import torch, transformers, soundfile, soxr, jiwer, espeakng_loader, msgpack; from transformers import ParakeetForCTC; print(torch.__version__, transformers.__version__, torch.cuda.is_available())" || exit 1
# the outer timeout leaves time to pack the checkpoint even if the run overshoots
timeout $(python3 -c "print(int($MIN * 60 + 90))") python3 -m systems.asr.train --init-from systems/checkpoints/ctc-conformer \
  --out $W/long --device $DEVICE --workers $WORKERS --threads 2 --batch-size $BATCH --lr 2e-3 --warmup 300 \
  --steps 100000 --eval-every 2000 --ckpt-every 1000 --log-every 100 --max-minutes $MIN --fit-steps > $OUT/long.log 2>&1
tail -n 4 $OUT/long.log
cp $W/long/train_log.jsonl $OUT/long.train_log.jsonl
tar -C $W/long --exclude trainer_state.pt -cf $W/long.tar ckpt && split -b 15M $W/long.tar $OUT/long.tar.part-
ls -la $OUT
