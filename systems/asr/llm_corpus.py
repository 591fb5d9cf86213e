"""Training sentences written by the embedded chat LLM over many topics, styles and settings
(greedy, so the corpus is reproducible), split into sentences, normalised and de-duplicated.

    python -m systems.asr.llm_corpus --out systems/asr/data/llm_sentences.txt [--limit-prompts N]

Appends as it goes and skips prompts already done (recorded in a sidecar file), so it can be
stopped and resumed at any time.
"""
from __future__ import annotations

import argparse
import itertools
import random
import re
from pathlib import Path

from systems.asr.corpus import SENT_SPLIT, normalize

TOPICS = """cooking dinner, baking bread, a farmers market, a city bus, a train journey, an airport, a beach holiday,
mountain hiking, camping, a rainy day, winter snow, spring flowers, autumn leaves, a summer festival, the ocean, rivers,
forests, deserts, volcanoes, earthquakes, the weather forecast, the moon, the planets, stars at night, a museum, a library,
a school day, a university lecture, homework, a job interview, an office meeting, working from home, a hospital visit,
a dentist, healthy food, running, swimming, football, tennis, basketball, cycling, the olympics, a chess game, music lessons,
a piano, a guitar, an orchestra, a painting class, photography, a birthday party, a wedding, a family dinner, grandparents,
a new baby, pets, dogs, cats, horses, birds, insects, bees, fish, whales, elephants, lions, a zoo, a farm, gardening,
tomatoes, apples, coffee, tea, a restaurant, a bakery, a supermarket, shopping for clothes, money and banks, a post office,
sending a letter, a phone call, computers, the internet, a robot, electric cars, bicycles, boats, ships, airplanes,
bridges, castles, ancient history, kings and queens, explorers, inventions, electricity, water, recycling, energy,
the human body, sleep, dreams, emotions, friendship, a surprise, a lost key, a broken window, fixing a car, moving house,
a hotel, a map, directions in a town, countries of europe, cities of asia, africa, south america, australia, canada,
languages, a translator, newspapers, a radio show, television, a film, a theatre, a story for children, a fairy tale,
a detective, a storm at sea, a lighthouse, a snowman, a picnic, a park, a playground, a clock, calendars, numbers,
counting, shapes and colours, science experiments, chemistry, physics, medicine, doctors, nurses, firefighters, police,
teachers, farmers, pilots, chefs, builders, artists, writers, scientists, space travel, rockets, satellites, the sun""".replace("\n", " ")
STYLES = ["simple sentences", "questions that a curious child might ask", "sentences that use numbers written as words",
          "short instructions", "sentences someone might say on the phone", "sentences from a travel diary",
          "facts", "polite requests"]
SETTINGS = ["", " in the morning", " in a small town", " during a holiday", " at work", " with friends",
            " in the past", " in the future"]


def prompts(seed: int = 0) -> list[str]:
    topics = [t.strip() for t in TOPICS.split(",") if t.strip()]
    combos = [f"Write five different {style} about {topic}{setting}. One per line."
              for topic, style, setting in itertools.product(topics, STYLES, SETTINGS)]
    random.Random(seed).shuffle(combos)
    return combos


def sentences_from(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(\d+[.)]|[-*•])\s*", "", line).strip()
        for s in SENT_SPLIT.split(line):
            if re.search(r"[0-9@#/\\<>{}_=]", s):  # digits and symbols have no single spoken form
                continue
            n = normalize(s)
            if 4 <= len(n.split()) <= 22:
                out.append(n)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="systems/asr/data/llm_sentences.txt")
    ap.add_argument("--llm", default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=120)
    ap.add_argument("--limit-prompts", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import torch
    from tqdm import tqdm

    from systems.llm import DEFAULT_LLM, ChatLLM, DecodeConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done_file = out.with_suffix(".done")
    done = int(done_file.read_text()) if done_file.exists() else 0
    seen = set(out.read_text().splitlines()) if out.exists() else set()
    todo = prompts()[: args.limit_prompts]
    llm = ChatLLM.load(args.llm or DEFAULT_LLM)
    cfg = DecodeConfig(args.max_new_tokens)
    bar = tqdm(total=len(todo), initial=done, desc="llm sentences", unit="prompt")
    for i in range(done, len(todo), args.batch_size):
        batch = todo[i:i + args.batch_size]
        texts = llm.generate([[{"role": "user", "content": p}] for p in batch], cfg)
        # an answer cut by the token cap ends in a fragment: drop its last sentence
        new = [s for t, n in texts for s in sentences_from(t)[: -1 if n >= args.max_new_tokens else None]
               if s not in seen]
        seen.update(new)
        with open(out, "a") as f:
            f.writelines(s + "\n" for s in dict.fromkeys(new))
        done_file.write_text(str(i + len(batch)))  # after the append: a crash redoes at most one batch
        bar.update(len(batch))
        bar.set_postfix(sentences=len(seen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
