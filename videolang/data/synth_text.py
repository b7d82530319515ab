"""Words of the synthetic corpus: templated captions per level, spoken-style narration, off-topic talk.

Captions vary their wording (several verbs per motion, several sentence frames) but always name the
object's colour and shape and, for tasks, the motion, so a caption pins down exactly one
(object, motion) pair. Irrelevant narration never uses a word that describes what is on screen.
"""

from __future__ import annotations

import numpy as np

MOTIONS = ("left", "right", "up", "down", "grow", "shrink")

# Third-person present tense, for captions.
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moves to the left", "slides left", "drifts leftward", "travels to the left"),
    "right": ("moves to the right", "slides right", "drifts rightward", "travels to the right"),
    "up": ("moves up", "rises", "floats upward", "climbs toward the top"),
    "down": ("moves down", "sinks", "drops downward", "slides toward the bottom"),
    "grow": ("grows larger", "expands", "gets bigger", "swells in size"),
    "shrink": ("shrinks", "gets smaller", "contracts", "becomes smaller"),
}
# Progressive, for narration ("the red circle is ...") and titles.
MOTION_SPOKEN: dict[str, tuple[str, ...]] = {
    "left": ("is going left", "is sliding over to the left", "heads left"),
    "right": ("is going right", "is sliding over to the right", "heads right"),
    "up": ("is going up", "is rising", "heads up to the top"),
    "down": ("is going down", "is sinking", "heads down to the bottom"),
    "grow": ("is getting bigger", "starts to grow", "is growing"),
    "shrink": ("is getting smaller", "starts to shrink", "is shrinking"),
}
MOTION_TITLES = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "grow": "growing",
    "shrink": "shrinking",
}
# Task labels: motion classes for recognition and segmentation at the finest level.
MOTION_LABELS = {
    "left": "move left",
    "right": "move right",
    "up": "move up",
    "down": "move down",
    "grow": "grow",
    "shrink": "shrink",
}

TASK_TEMPLATES = (
    "The {obj} {verb}.",
    "A {obj} {verb}.",
    "Here the {obj} {verb}.",
    "In the {scene}, the {obj} {verb}.",
    "We watch as the {obj} {verb}.",
)
STEP_TEMPLATES = (
    "A {obj} appears and {seq}.",
    "The {obj} {seq}.",
    "Next comes a {obj} that {seq}.",
)
PHASE_TEMPLATES = (
    "A {scene} scene with {objs}.",
    "In the {scene}, {objs} take turns on screen.",
    "The {scene} backdrop hosts {objs}.",
)
NARRATION_OPENERS = ("so now", "okay", "and here", "now watch,", "alright so", "and then")
# Talk that describes nothing on screen (no colour, shape, motion or scene word).
IRRELEVANT = (
    "don't forget to subscribe to the channel",
    "i bought this microphone last week",
    "the weather has been lovely today",
    "let me know in the comments what you think",
    "my neighbour is mowing the lawn again",
    "thanks so much for watching",
    "i'll put a link in the description",
    "sorry, my phone keeps buzzing",
    "we'll take a short break after this",
    "this part always makes me hungry",
    "a quick shout out to everyone who wrote in",
    "i recorded this over the weekend",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def object_name(color: str, shape: str) -> str:
    return f"{color} {shape}"


def task_caption(rng: np.random.Generator, obj: str, motion: str, scene: str) -> str:
    verb = _pick(rng, MOTION_PHRASES[motion])
    return _pick(rng, TASK_TEMPLATES).format(obj=obj, verb=verb, scene=scene)


def step_caption(rng: np.random.Generator, obj: str, motions: list[str]) -> str:
    verbs = [_pick(rng, MOTION_PHRASES[m]) for m in motions]
    if len(verbs) == 1:
        seq = verbs[0]
    else:
        seq = ", then ".join(verbs[:-1]) + (" and finally " if len(verbs) > 2 else ", then ") + verbs[-1]
    return _pick(rng, STEP_TEMPLATES).format(obj=obj, seq=seq)


def phase_caption(rng: np.random.Generator, scene: str, objs: list[str]) -> str:
    named = [f"a {o}" for o in dict.fromkeys(objs)]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return _pick(rng, PHASE_TEMPLATES).format(scene=scene, objs=listed)


def task_title(obj: str, motion: str) -> str:
    return f"{obj.capitalize()} {MOTION_TITLES[motion]}"


def narration_sentence(rng: np.random.Generator, obj: str, motion: str) -> str:
    return f"{_pick(rng, NARRATION_OPENERS)} the {obj} {_pick(rng, MOTION_SPOKEN[motion])}"


def irrelevant_sentence(rng: np.random.Generator) -> str:
    return _pick(rng, IRRELEVANT)
