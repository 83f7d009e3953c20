"""The synthetic corpus the demo model is trained on, generated from a seed.

Each generator returns one "document" as text. The mixture is chosen so that the classic
mechanisms of small language models are both useful and checkable:

- stories: plain sentences about people, places and things (names recur within a story, so
  copying earlier tokens pays: the pressure that makes induction heads in real text);
- ioi: indirect-object sentences (Wang et al. 2022), "When Mary and John went to the store,
  John gave a drink to" -> " Mary";
- sequences: ordered lists to continue (numbers, number words, ordinals, months, days,
  letters: the sequence-continuation circuits of Lan et al.), and numbers counted in steps
  of 2, 3, 5 or 10, whose next item depends on the previous two tokens;
- facts: subject-relation-object sentences over a fixed table (memorised by the MLPs);
- repeats: a span of uniformly random token ids written two or three times (added by the
  trainer in id space, since it is not text).

Evaluation prompts come from a disjoint random stream and, for IOI and facts, also from
sentence forms the training corpus never uses (ioi_templates, fact_sentences).
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Sequence, Tuple

NAMES = [
    "Mary", "John", "Alice", "Bob", "Tom", "Anna", "James", "Sarah", "David", "Emma",
    "Paul", "Lisa", "Mark", "Kate", "Peter", "Laura", "Jack", "Lucy", "Sam", "Rose",
    "Max", "Ruth", "Ben", "Jane", "Dan", "Amy", "Tim", "Eve", "Carl", "Nora",
]
PLACES = [
    "store", "park", "school", "market", "garden", "station", "library", "beach",
    "river", "office", "kitchen", "hospital", "museum", "farm", "church", "forest",
]
OBJECTS = [
    "drink", "book", "ball", "apple", "ring", "letter", "key", "flower", "bag", "hat",
    "cake", "pen", "cup", "coat", "map", "box", "toy", "card", "lamp", "shirt",
]
ADJECTIVES = ["red", "blue", "green", "small", "big", "old", "new", "warm", "cold", "soft"]
PRONOUNS = {name: ("she" if name in {
    "Mary", "Alice", "Anna", "Sarah", "Emma", "Lisa", "Kate", "Laura", "Lucy", "Rose",
    "Ruth", "Jane", "Amy", "Eve", "Nora"} else "he") for name in NAMES}

NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]
ORDINALS = [
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth",
]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
LETTERS = [chr(ord("A") + i) for i in range(26)]
DIGITS = [str(i) for i in range(0, 61)]

# name, items, whether the list wraps around (December -> January).
SEQUENCES: List[Tuple[str, List[str], bool]] = [
    ("numbers", DIGITS, False),
    ("number words", NUMBER_WORDS, False),
    ("ordinals", ORDINALS, False),
    ("months", MONTHS, True),
    ("days", DAYS, True),
    ("letters", LETTERS, False),
]

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
    "Canada": "Ottawa", "Greece": "Athens", "Norway": "Oslo", "Kenya": "Nairobi",
    "Peru": "Lima", "Cuba": "Havana", "Ireland": "Dublin", "Poland": "Warsaw",
}
LANGUAGES = {
    "France": "French", "Germany": "German", "Italy": "Italian", "Spain": "Spanish",
    "Japan": "Japanese", "China": "Chinese", "Russia": "Russian", "Egypt": "Arabic",
    "Greece": "Greek", "Norway": "Norwegian", "Poland": "Polish", "Peru": "Spanish",
    "Cuba": "Spanish", "Ireland": "English", "Canada": "English", "Kenya": "Swahili",
}
COLORS = {
    "banana": "yellow", "grass": "green", "sky": "blue", "snow": "white", "coal": "black",
    "blood": "red", "orange": "orange", "lemon": "yellow", "tomato": "red", "leaf": "green",
    "milk": "white", "night": "black",
}
SOUNDS = {
    "dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa",
    "lion": "roar", "owl": "hoot", "snake": "hiss", "horse": "neigh", "bee": "buzz",
}
OPPOSITES = {
    "hot": "cold", "up": "down", "big": "small", "fast": "slow", "day": "night",
    "good": "bad", "old": "young", "happy": "sad", "open": "closed", "left": "right",
    "black": "white", "early": "late",
}

# relation -> (table, templates). "{s}" is the subject, "{o}" the object, which always ends
# the sentence, so a prompt is the sentence cut before " {o}". Each fact is written in two of
# its relation's three templates; the third (the k-th subject's template k mod 3) never occurs
# in training and tests whether the model recalls the fact in a form it has only seen used
# for other subjects.
FACT_RELATIONS: Dict[str, Tuple[Dict[str, str], List[str]]] = {
    "capital": (CAPITALS, [
        "The capital of {s} is {o}.",
        "{s} has its capital in {o}.",
        "The capital city of {s} is {o}.",
    ]),
    "language": (LANGUAGES, [
        "People in {s} speak {o}.",
        "The language of {s} is {o}.",
        "In {s} most people speak {o}.",
    ]),
    "color": (COLORS, [
        "The color of {s} is {o}.",
        "The {s} is {o}.",
        "Everyone knows that {s} is {o}.",
    ]),
    "sound": (SOUNDS, [
        "The {s} says {o}.",
        "A {s} makes the sound {o}.",
        "When a {s} speaks it says {o}.",
    ]),
    "opposite": (OPPOSITES, [
        "The opposite of {s} is {o}.",
        "{s} is the opposite of {o}.",
        "The word {s} means the opposite of {o}.",
    ]),
}


def fact_sentences(held_out: bool) -> List[Tuple[str, str]]:
    """(sentence, object) for every fact in its training templates (or its held-out one)."""
    out = []
    for table, templates in FACT_RELATIONS.values():
        for k, (subject, obj) in enumerate(table.items()):
            for t, template in enumerate(templates):
                if (t == k % len(templates)) == held_out:
                    out.append((template.format(s=subject, o=obj), obj))
    return out


# IOI sentences (Wang et al. 2022) are an opening clause that names {A} and {B} and an action
# in which {B}, the repeated subject, gives something to {A}, the indirect object; the answer
# " {A}" ends the sentence. A fixed quarter of the (opening, action) pairs never occurs in
# training: evaluation uses them to test IOI on sentences the model has not seen.
IOI_OPENINGS = [
    "When {A} and {B} went to the {place},",
    "After {A} and {B} went to the {place},",
    "While {A} and {B} were at the {place},",
    "Then, {A} and {B} went to the {place}.",
    "{A} and {B} went to the {place}.",
    "Then, {A} and {B} had a long day at the {place}.",
    "When {B} and {A} went to the {place},",
    "{B} and {A} were at the {place}.",
]
IOI_ACTIONS = [
    "{B} gave a {object} to {A}.",
    "{B} gave the {object} to {A}.",
    "{B} handed a {object} to {A}.",
    "{B} passed the {object} to {A}.",
    "{B} threw a {object} to {A}.",
    "{B} showed the {object} to {A}.",
]


def ioi_templates(held_out: bool) -> List[str]:
    """The training (or the held-out) opening + action combinations."""
    return [f"{opening} {action}"
            for i, opening in enumerate(IOI_OPENINGS)
            for j, action in enumerate(IOI_ACTIONS)
            if ((i + j) % 4 == 0) == held_out]


def _story(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    place, place2 = rng.sample(PLACES, 2)
    obj, obj2 = rng.sample(OBJECTS, 2)
    adj = rng.choice(ADJECTIVES)
    pa, pb = PRONOUNS[a], PRONOUNS[b]
    sentences = [
        f"{a} went to the {place}.",
        f"{a} saw a {adj} {obj} at the {place}.",
        f"{pa.capitalize()} took the {obj} home.",
        f"{b} was at the {place2} with a {obj2}.",
        f"{a} met {b} at the {place2}.",
        f"{b} liked the {adj} {obj}.",
        f"{a} and {b} walked to the {place}.",
        f"{pb.capitalize()} said that the {obj2} was {adj}.",
        f"Later {a} found the {obj2} in the {place}.",
        f"{b} gave {a} the {obj2}.",
    ]
    count = rng.randint(2, 6)
    chosen = sorted(rng.sample(range(len(sentences)), count))
    return " ".join(sentences[i] for i in chosen)


def ioi_sentence(rng: random.Random, template: str) -> Tuple[str, str, str]:
    """One IOI sentence; returns (text, indirect object, subject)."""
    a, b = rng.sample(NAMES, 2)
    text = template.format(A=a, B=b, place=rng.choice(PLACES), object=rng.choice(OBJECTS))
    return text, a, b


_IOI_TRAINING_TEMPLATES = ioi_templates(held_out=False)


def _ioi(rng: random.Random) -> str:
    return ioi_sentence(rng, rng.choice(_IOI_TRAINING_TEMPLATES))[0]


def sequence_items(rng: random.Random, length: int) -> Tuple[str, List[str]]:
    """A run of `length` consecutive items of one ordered list (wrapping where it may)."""
    name, items, wraps = rng.choice(SEQUENCES)
    if wraps:
        start = rng.randrange(len(items))
        return name, [items[(start + i) % len(items)] for i in range(length)]
    length = min(length, len(items))
    start = rng.randrange(len(items) - length + 1)
    return name, items[start:start + length]


def counting_items(rng: random.Random, length: int) -> List[str]:
    """Numbers counted up in steps of 2, 3, 5 or 10 (the step is read off the last two)."""
    step = rng.choice([2, 3, 5, 10])
    length = min(length, 60 // step + 1)
    start = rng.randrange(61 - step * (length - 1))
    return [str(start + step * i) for i in range(length)]


def _sequence(rng: random.Random) -> str:
    if rng.random() < 0.25:
        name, run = "numbers", counting_items(rng, rng.randint(3, 10))
    else:
        name, run = sequence_items(rng, rng.randint(3, 10))
    separator = rng.choice([" ", ", "])
    body = separator.join(run)
    frame = rng.choice([
        "{body}",
        "Count the {name}: {body}",
        "The {name} go {body}",
        "{body} and so on.",
    ])
    return frame.format(name=name, body=body)


_FACT_TRAINING_SENTENCES = [sentence for sentence, _ in fact_sentences(held_out=False)]


def _fact(rng: random.Random) -> str:
    return rng.choice(_FACT_TRAINING_SENTENCES)


GENERATORS: Dict[str, Callable[[random.Random], str]] = {
    "story": _story,
    "ioi": _ioi,
    "sequence": _sequence,
    "fact": _fact,
}


def documents(rng: random.Random, weights: Dict[str, float]) -> Callable[[], str]:
    """A sampler of text documents with the given mixture weights (over GENERATORS)."""
    names = list(weights)
    shares = [weights[n] for n in names]

    def sample() -> str:
        return GENERATORS[rng.choices(names, shares)[0]](rng)

    return sample


def tokenizer_training_text(seed: int, count: int) -> List[str]:
    """Every word of the corpus, many times over, for fitting the BPE tokenizer."""
    rng = random.Random(seed)
    sample = documents(rng, {n: 1.0 for n in GENERATORS})
    texts = [sample() for _ in range(count)]
    # Every listed word, so that rare ones (fact objects) are in the tokenizer's statistics too.
    vocabulary: Sequence[str] = (
        NAMES + PLACES + OBJECTS + ADJECTIVES + NUMBER_WORDS + ORDINALS + MONTHS + DAYS +
        LETTERS + DIGITS
    )
    for table, _ in FACT_RELATIONS.values():
        vocabulary = list(vocabulary) + list(table) + list(table.values())
    texts.extend(" ".join(vocabulary) for _ in range(50))
    return texts
