"""Write the real demo's prompts: varied user requests, split into train and held-out.

    python train/make_real_prompts.py     # -> vas_jax/assets/real-prompts/{train,heldout}.jsonl

Requests of many kinds (opinions, advice, descriptions, letters, explanations, reviews, stories)
about many subjects, so that neither reward is met by one stock answer: some subjects invite praise,
some complaint, some neither; some requests invite long sentences, some short. Deterministic: the
same files every run. The split is by subject, so no held-out prompt shares its subject with a
training prompt.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "vas_jax" / "assets" / "real-prompts"

# (subject, what kind of thing it is): the kind picks the requests that make sense for it
SUBJECTS = {
    "place": [
        "a small seaside town",
        "the city you grew up in",
        "a crowded airport",
        "a quiet library",
        "a night market",
        "a mountain cabin",
        "a busy hospital waiting room",
        "an old train station",
        "a public swimming pool",
        "a school cafeteria",
        "a desert campsite",
        "a rainy harbour",
        "a suburban shopping mall",
        "a botanical garden",
        "a village bakery",
        "an empty parking lot at night",
        "a crowded subway car",
        "a lighthouse",
        "a farmers market",
        "a university campus in winter",
        "a roadside diner",
        "a children's playground",
        "a museum of natural history",
        "an office on a Monday morning",
        "a beach after a storm",
        "a city park in autumn",
        "a hotel lobby",
        "a dentist's office",
        "a football stadium",
        "a hiking trail in the fog",
    ],
    "thing": [
        "a second-hand bicycle",
        "a cheap umbrella",
        "a new smartphone",
        "an old wooden desk",
        "a pair of hiking boots",
        "a noisy washing machine",
        "a cast-iron pan",
        "a paper map",
        "an electric kettle",
        "a wool scarf",
        "a broken alarm clock",
        "a pocket knife",
        "a library card",
        "a kitchen timer",
        "a borrowed tent",
        "a handwritten recipe book",
        "a vacuum cleaner",
        "a desk lamp",
        "a reusable water bottle",
        "a used car",
        "a pair of noise-cancelling headphones",
        "a jigsaw puzzle",
        "a garden hose",
        "a laptop that keeps freezing",
        "a sourdough starter",
    ],
    "event": [
        "a job interview",
        "a family reunion",
        "the first day at a new school",
        "a power cut",
        "a long flight delay",
        "moving to a new apartment",
        "a surprise birthday party",
        "a missed bus",
        "a school science fair",
        "a wedding rehearsal",
        "a neighbourhood clean-up",
        "a thunderstorm at night",
        "a marathon",
        "a team project deadline",
        "a camping trip in the rain",
        "a piano recital",
        "losing a wallet",
        "a dinner party that went wrong",
        "a first driving lesson",
        "a village festival",
        "a snow day",
        "a hospital visit",
        "a volunteer shift at a food bank",
        "a chess tournament",
        "a road trip with friends",
    ],
    "topic": [
        "photosynthesis",
        "how vaccines work",
        "inflation",
        "the water cycle",
        "recycling plastic",
        "compound interest",
        "why the sky is blue",
        "how bees make honey",
        "the history of the printing press",
        "electric cars",
        "sleep and memory",
        "how a bill becomes law",
        "black holes",
        "learning a second language",
        "remote work",
        "how bread rises",
        "the metric system",
        "climate change",
        "how the internet works",
        "volcanoes",
        "public libraries",
        "the importance of exercise",
        "how credit cards work",
        "solar panels",
        "the invention of the telephone",
        "tides",
        "how to read a nutrition label",
        "social media and teenagers",
        "composting",
        "earthquakes",
    ],
    "activity": [
        "learning to cook",
        "running in the morning",
        "keeping a diary",
        "gardening on a balcony",
        "learning to play the guitar",
        "cleaning the house",
        "budgeting for the month",
        "studying for exams",
        "taking care of a puppy",
        "baking bread",
        "painting with watercolours",
        "commuting by bike",
        "doing homework with kids",
        "writing a cover letter",
        "meditating",
        "packing for a trip",
        "knitting",
        "fixing a leaky tap",
        "training for a 5k",
        "waking up early",
        "planning a wedding",
        "learning to swim",
        "cooking for a large family",
        "saving money",
        "public speaking",
    ],
    "person": [
        "a new neighbour",
        "your grandmother",
        "a strict teacher",
        "an old friend you lost touch with",
        "a coworker",
        "a landlord",
        "a younger brother",
        "a customer service agent",
        "a bus driver",
        "a football coach",
        "a mentor",
        "a pen pal in another country",
        "a nurse who helped you",
        "a classmate",
        "a shop owner",
        "a roommate",
        "a librarian",
        "a volunteer firefighter",
        "your future self",
        "a childhood hero",
    ],
}

REQUESTS = {
    "place": [
        "Describe {s} in a few sentences.",
        "What is it like to spend an afternoon at {s}?",
        "Write a short postcard from {s}.",
        "Would you recommend visiting {s}? Why?",
        "Write a short review of {s}.",
        "Tell me a short story that takes place at {s}.",
        "What sounds and smells would I notice at {s}?",
        "Write a diary entry about a day at {s}.",
    ],
    "thing": [
        "Write a short product review of {s}.",
        "What do you think of {s}?",
        "Describe {s} to someone who has never seen one.",
        "Write a short story about {s}.",
        "Is {s} worth having? Explain briefly.",
        "Write a note to a friend about {s} you gave them.",
        "Tell me about a problem with {s} and how to deal with it.",
    ],
    "event": [
        "Describe {s}.",
        "How would you feel about {s}?",
        "Write a short story about {s}.",
        "Write a text message to a friend about {s}.",
        "Give me some advice for {s}.",
        "Tell me what happened at {s}, as if you were there.",
        "Write a diary entry about {s}.",
        "What can someone learn from {s}?",
    ],
    "topic": [
        "Explain {s} in simple words.",
        "Explain {s} to a ten-year-old.",
        "Give me three facts about {s}.",
        "Why does {s} matter?",
        "Write a short paragraph about {s}.",
        "What do people often get wrong about {s}?",
        "Summarize {s} in two sentences.",
    ],
    "activity": [
        "Give me some tips for {s}.",
        "What do you think about {s}?",
        "How do I get started with {s}?",
        "Describe what {s} is like for a beginner.",
        "Write a short motivational message about {s}.",
        "What are the hard parts of {s}?",
        "Tell me a short story about someone {s}.",
    ],
    "person": [
        "Write a short letter to {s}.",
        "Describe {s}.",
        "Write a thank-you note to {s}.",
        "Write a short message to {s} about a problem you had.",
        "What would you say to {s} if you met them today?",
        "Tell me a short story about {s}.",
        "Write a complaint to {s}, politely.",
    ],
}

PER_SUBJECT = 4  # requests per subject: 155 subjects give 620 prompts
HELDOUT_FRACTION = 0.2


def make(seed: int = 0):
    rng = random.Random(seed)
    train, heldout = [], []
    for kind, subjects in SUBJECTS.items():
        for s in subjects:
            split = heldout if rng.random() < HELDOUT_FRACTION else train
            for t in rng.sample(REQUESTS[kind], PER_SUBJECT):
                text = t.format(s=s)
                split.append({"prompt": text[0].upper() + text[1:], "kind": kind})
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


def main():
    train, heldout = make()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("heldout", heldout)):
        with open(OUT / f"{name}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"{len(train)} train and {len(heldout)} held-out prompts -> {OUT}")


if __name__ == "__main__":
    main()
