"""MS-TCN action-segmentation folders (Breakfast, 50Salads, GTEA) -> one record per video of `step`s.

The benchmark ships, per dataset, `groundTruth/<video>.txt` (one label per feature frame), `mapping.txt`
(`<index> <label>`) and `splits/{train,test}.splitN.bundle` (groundTruth file names per fold). Labels are
per frame of the precomputed I3D features, so times are frame / fps with the features' rate (15 fps for
Breakfast and GTEA, 30 for 50Salads: `--fps` must match the features used).

Runs of one label become one step. Background labels (`SIL`, `background`, `action_start`,
`action_end`) are not steps: their frames are left uncovered, which is what segmentation evaluation
reads as background, and counted. Files are streamed: only the current video's runs are held.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from videolang.data.builders.common import BuildContext, BuildError, Built, Changes, Row, new_record, read_table
from videolang.data.manifest import Segment

DEFAULT_FPS = 15.0  # the standard I3D features of Breakfast and GTEA; 50Salads' are at 30
BACKGROUND = frozenset({"SIL", "background", "action_start", "action_end"})
BACKGROUND_NOTE = "background frame(s) (SIL, background, action_start, action_end) left without a step"
NO_FOLD = "video(s) in neither splits bundle of the fold"
SPLITS = ("train", "test")  # splits/<split>.splitN.bundle


def build_mstcn(source: Path, ctx: BuildContext) -> Iterator[Built]:
    fps = ctx.options.fps or DEFAULT_FPS
    labels = read_mapping(source / "mapping.txt")
    files = ground_truth_files(source)
    splits = None if ctx.options.split else read_splits(source, ctx.options.fold, files)
    dataset = source.resolve().name
    for file in ctx.videos(files):
        split = "train" if splits is None else splits.get(file.name)
        if split is None:
            ctx.report.skipped[NO_FOLD] += 1
            continue
        yield _record(file, labels, fps, split, dataset)


def read_mapping(path: Path) -> frozenset[str]:
    """The labels of `mapping.txt` (`<index> <label>` per line); a repeated index or label is an error."""
    indices: dict[int, int] = {}
    labels: dict[str, int] = {}
    for row in read_table(path, delimiter=" ", header=("index", "label")):
        index, label = row.integer("index"), row.text("label")
        if index in indices:
            row.fail("index", f"{index} already used on line {indices[index]}")
        if label in labels:
            row.fail("label", f"'{label}' already listed on line {labels[label]}")
        indices[index], labels[label] = row.line, row.line
    if not labels:
        raise BuildError(path, "", "no labels")
    return frozenset(labels)


def ground_truth_files(source: Path) -> list[Path]:
    folder = source / "groundTruth"
    if not folder.is_dir():
        raise BuildError(source, "", "not an MS-TCN dataset folder: no groundTruth folder")
    files = sorted(f for f in folder.glob("*.txt") if f.is_file())
    if not files:
        raise BuildError(folder, "", "no .txt files")
    return files


def read_splits(source: Path, fold: int, files: list[Path]) -> Optional[dict[str, str]]:
    """groundTruth file name -> split from `splits/{train,test}.split<fold>.bundle`; None without a splits
    folder (every video is then train). A name in no groundTruth file, or in both bundles, is an error."""
    folder = source / "splits"
    if not folder.is_dir():
        if fold != 1:
            raise BuildError(source, "", f"--fold {fold} given but there is no splits folder")
        return None
    known = {f.name for f in files}
    out: dict[str, str] = {}
    where: dict[str, str] = {}  # name -> the bundle line that listed it
    for split in SPLITS:
        path = folder / f"{split}.split{fold}.bundle"
        if not path.is_file():
            raise BuildError(path, "", f"not found (fold {fold}; --fold picks the splits/*.splitN.bundle files)")
        for row in read_table(path, delimiter="\t", header=("file",)):
            name = _bundle_entry(row, known)
            if name in where:
                row.fail("file", f"'{name}' is already listed at {where[name]}")
            out[name], where[name] = split, f"{row.file}:{row.line}"
    return out


def _bundle_entry(row: Row, known: set[str]) -> str:
    """A bundle line as a groundTruth file name (the `.txt` may be left out)."""
    name = row.text("file")
    name = name if name.endswith(".txt") else f"{name}.txt"
    if name not in known:
        row.fail("file", f"no groundTruth/{name}")
    return name


def _record(file: Path, labels: frozenset[str], fps: float, split: str, dataset: str) -> Built:
    changes = Changes()
    segments, frames = [], 0
    for label, first, end in _runs(file, labels):
        frames = end
        if label in BACKGROUND:
            changes.notes[BACKGROUND_NOTE] += end - first
            continue
        segments.append(Segment("step", first / fps, end / fps, caption=label.replace("_", " "), label=label))
    record = new_record(file.stem, split=split, duration=frames / fps if frames else None,
                        meta={"dataset": dataset, "feature_fps": fps, "frames": frames}, segments=segments)
    return Built(record, changes)


def _runs(file: Path, labels: frozenset[str]) -> Iterator[tuple[str, int, int]]:
    """(label, first frame, frame after the last) of each run of equal labels, streamed."""
    label: Optional[str] = None
    first = frames = 0
    for row in read_table(file, delimiter="\t", header=("label",)):
        current = row.text("label")
        if current not in labels:
            row.fail("label", f"'{current[:40]}' is not in mapping.txt")
        if current != label:
            if label is not None:
                yield label, first, frames
            label, first = current, frames
        frames += 1
    if label is not None:
        yield label, first, frames
