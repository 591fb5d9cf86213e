"""Hugging Face `datasets` audio sets as items (optional: needs the `datasets` package and hub
access or a local cache; not exercised offline).

As a task: `--tasks hf:DATASET_ID[:key=value...]`, ASR on the dataset's audio (`HFASRTask`).
"""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from bench.audio import load_audio, resample, validate
from bench.types import SAMPLE_RATE, Audio, AudioRef, Item, Task, Turn, first_n
from tasks.builtin import ASR
from tasks.common import items_version
from tasks.loaders import ASR_INSTRUCTION, DataError, _unique


def row_audio(ds: Any, index: int, column: str, origin: str) -> Audio:
    """The audio of one row of a `datasets` dataset (only that row is read), whichever form the column
    gives: decoded (an array, or datasets 4's torchcodec decoder) or undecoded (bytes or a path)."""
    value = ds[index][column]  # decodes this one row only
    if hasattr(value, "get_all_samples"):  # datasets >= 4: a torchcodec AudioDecoder
        s = value.get_all_samples()
        value = {"array": s.data.numpy(), "sampling_rate": s.sample_rate}
    if not isinstance(value, dict):
        return load_audio(value, origin=origin)
    if value.get("array") is None:  # undecoded: bytes or a path
        if not (value.get("bytes") or value.get("path")):
            raise DataError(f"{origin}: the row has neither audio bytes nor a path")
        return load_audio(value.get("bytes") or value["path"], origin=origin)
    a, sr = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    mono = a.mean(axis=0) if a.ndim == 2 else a  # torchcodec gives (channels, samples)
    validate(mono, sr, origin)
    return Audio(resample(mono, sr), SAMPLE_RATE, origin)


def from_hf_dataset(name: str, split: str, audio_column: str = "audio", text_column: str | None = "text",
                    config: str | None = None, id_column: str | None = None,
                    reference_column: str | None = None, instruction: str | None = ASR_INSTRUCTION,
                    limit: int | None = None) -> list[Item]:
    """A Hugging Face audio dataset as items: audio decoded lazily per item; transcript from
    `text_column`; references from `reference_column` (a string or list of strings), else the
    transcript. Needs the optional `datasets` package (and hub access or a local cache)."""
    try:
        import datasets
    except ImportError:
        raise ImportError("from_hf_dataset needs the Hugging Face `datasets` package: "
                          "pip install 'datasets[audio]'") from None
    ds = datasets.load_dataset(name, config, split=split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    text_cols = [c for c in (text_column, id_column, reference_column) if c]
    missing = sorted(set(text_cols + [audio_column]) - set(ds.column_names))
    if missing:
        raise DataError(f"{name}: no column(s) {missing}; columns are {ds.column_names}")
    rows = ds.select_columns(text_cols) if text_cols else None  # text only: listing decodes no audio
    items = []
    for i in range(len(ds)):
        row = rows[i] if rows is not None else {}
        item_id = f"{name}-{split}-{row[id_column] if id_column else i}"
        transcript = row.get(text_column) if text_column else None
        refs = row.get(reference_column) if reference_column else transcript
        refs = () if refs is None else (refs,) if isinstance(refs, str) else tuple(refs)
        ref = AudioRef(partial(row_audio, ds, i, audio_column, item_id), origin=f"hf:{item_id}")
        items.append(Item(item_id, Turn("user", audio=ref, transcript=transcript), instruction=instruction,
                          references=refs, meta={"source": f"hf:{name}", "split": split, "index": i}))
    return _unique(items, name)


HF_SPLITS = {"test": "test", "dev": "validation", "train": "train"}  # this harness' split → the hub's usual name
HF_OPTIONS = ("config", "split", "audio_column", "text_column", "id_column")


class HFASRTask(Task):
    """ASR on a Hugging Face audio dataset: `--tasks hf:DATASET_ID[:key=value...]` (as asr).
    Keys: config, split, audio_column, text_column, id_column (defaults as `from_hf_dataset`), e.g.
    `hf:google/fleurs:config=en_us:text_column=transcription`. Needs the `datasets` package."""

    metrics = ASR.metrics
    transcript_only = True

    def __init__(self, spec: str, split: str = "test"):
        """`split` is this harness' split (test, dev, train), mapped to the hub's usual name unless
        the spec gives `split=`."""
        dataset, *pairs = spec.split(":")  # hub ids have no ':'
        options: dict[str, str] = {"split": HF_SPLITS.get(split, split)}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if key not in HF_OPTIONS or not eq or not value:
                raise ValueError(f"hf:{spec}: expected hf:DATASET_ID[:key=value...] with keys "
                                 f"{', '.join(HF_OPTIONS)}; got {pair!r}")
            options[key] = value
        if not dataset:
            raise ValueError("hf: needs a dataset id, e.g. hf:google/fleurs:config=en_us")
        self.name = f"hf:{spec}"
        self.description = f"ASR on the Hugging Face dataset {dataset} ({options['split']})"
        self._items = from_hf_dataset(dataset, **options)
        # the listing's content is part of the version: a dataset updated on the hub never reuses old outputs
        self.version = f"{ASR.version}-{items_version(self._items)}"

    def items(self, limit: int | None = None) -> list[Item]:
        return first_n(self._items, limit)
