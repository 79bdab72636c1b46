"""The fenced code blocks of README.md and docs/*.md, and the markers that say
how tests/test_doc_snippets.py treats each one.

A marker is an HTML comment (invisible on the rendered page) on its own line
directly above the opening fence; several may stand one per line:

    <!-- snippet: fixture NAME -->           python: run after tests/doc_fixtures.py's NAME(),
                                              which defines the names the block takes as given
    <!-- snippet: replace `OLD` with `NEW` -->  python: run with that one textual change
                                              (OLD must occur in the block)
    <!-- snippet: continues -->              python: a fragment; run after the previous python
                                              block of the same file (with its markers)
    <!-- snippet: skip: REASON -->           python: not run, for the stated reason
    <!-- snippet: checked NAME -->           quoted output: a test runs the command NAME names
                                              and finds these lines in what it prints
    <!-- snippet: example -->                quoted output of a run: the paragraph above gives
                                              its date (YYYY-MM-DD) and configuration
    <!-- snippet: not output: REASON -->     a block that is neither code nor output (formulas)

Every ```python block runs unless it is marked `skip`; every other block is a
command block (each line a command, a comment or a `...` placeholder; their
commands are tests/test_docs.py's) or carries one of the last three markers.
"""

import dataclasses
import os
import re

import doc_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"^<!--\s*snippet:\s*(.*?)\s*-->\s*$")
REPLACE = re.compile(r"^replace `([^`]+)` with `([^`]*)`$")
PYTHON_ONLY = ("fixture", "replace", "continues", "skip")
OUTPUT_ONLY = ("checked", "example", "not output")
COMMAND_WORDS = ("make", "python", "python3", "pip", "export", "tensorboard", "cd", "time")
ENV_PREFIX = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+")


def doc_paths(root=ROOT):
    docs = os.path.join(root, "docs")
    return ["README.md"] + sorted(
        os.path.join("docs", name) for name in os.listdir(docs) if name.endswith(".md"))


@dataclasses.dataclass
class Block:
    path: str  # relative to the root, "docs/tools.md"
    line: int  # the opening fence's line number
    info: str  # the fence's info string: "python", "" ...
    text: str
    markers: list  # directive strings, in order
    before: str  # the prose paragraph above the block (markers excluded)

    @property
    def where(self):
        return f"{self.path}:{self.line}"

    def directive(self, word):
        """The rest of the first directive that starts with `word`, or None."""
        for marker in self.markers:
            if marker == word or marker.startswith(word + " ") or marker.startswith(word + ":"):
                return marker[len(word):].lstrip(" :")
        return None


def read_blocks(path, root=ROOT):
    """Every fenced block of one Markdown file, in order."""
    lines = open(os.path.join(root, path), encoding="utf-8").read().split("\n")
    blocks, fence, body = [], None, []
    for number, line in enumerate(lines, 1):
        if not line.startswith("```"):
            if fence is not None:
                body.append(line)
            continue
        if fence is None:
            fence, body = (number, line[3:].strip()), []
            continue
        start, info = fence
        markers, above = [], start - 2  # index of the line above the fence
        while above >= 0 and MARKER.match(lines[above]):
            markers.insert(0, MARKER.match(lines[above]).group(1))
            above -= 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        paragraph = []
        while above >= 0 and lines[above].strip() and not lines[above].startswith("```"):
            paragraph.insert(0, lines[above])
            above -= 1
        blocks.append(Block(path, start, info, "\n".join(body) + "\n", markers,
                            "\n".join(paragraph)))
        fence = None
    if fence is not None:
        raise ValueError(f"{path}:{fence[0]}: unclosed code fence")
    return blocks


def all_blocks(root=ROOT):
    return [block for path in doc_paths(root) for block in read_blocks(path, root)]


def marker_errors(block):
    """What is wrong with a block's markers (unknown, misplaced, stale), as sentences."""
    errors = []
    is_python = block.info == "python"
    for marker in block.markers:
        word = next((w for w in PYTHON_ONLY + OUTPUT_ONLY
                     if marker == w or marker.startswith((w + " ", w + ":"))), None)
        if word is None:
            errors.append(f"unknown marker {marker!r}")
        elif (word in PYTHON_ONLY) != is_python:
            errors.append(f"marker {marker!r} does not apply to a {block.info or 'plain'} block")
        elif word == "replace":
            found = REPLACE.match(marker)
            if not found:
                errors.append(f"write {marker!r} as: replace `OLD` with `NEW`")
            elif found.group(1) not in block.text:
                errors.append(f"{marker!r}: the block has no {found.group(1)!r}")
        elif word in ("skip", "not output", "fixture", "checked") and not block.directive(word):
            what = "name" if word in ("fixture", "checked") else "reason"
            errors.append(f"marker {marker!r} needs a {what}")
        elif word == "fixture" and not callable(getattr(doc_fixtures, block.directive(word), 0)):
            errors.append(f"{marker!r}: tests/doc_fixtures.py has no such function")
    return [f"{block.where}: {error}" for error in errors]


def is_command_block(block):
    """Whether every line is a command (tests/test_docs.py checks those), a comment or `...`."""
    lines = [line.strip() for line in block.text.splitlines() if line.strip()]
    def is_command(line):
        if line.startswith(("#", "...", "…")):
            return True
        words = ENV_PREFIX.sub("", line).split()
        if words[1:2] == ["-m"] and words[2:3] and words[2].endswith(":"):
            return False  # a program's output: "python -m train.train: error: ..."
        return os.path.basename(words[0]) in COMMAND_WORDS
    return bool(lines) and all(is_command(line) for line in lines)


def source(blocks, index):
    """The program that runs python block `blocks[index]`: its fixtures, the blocks it
    continues, then its own text, each with its substitutions applied."""
    chain, position = [blocks[index]], index
    while chain[0].directive("continues") is not None:
        earlier = [i for i in range(position) if blocks[i].path == chain[0].path
                   and blocks[i].info == "python"]
        if not earlier:
            raise ValueError(f"{chain[0].where}: 'continues' but no python block before it")
        position = earlier[-1]
        chain.insert(0, blocks[position])
    parts = []
    for block in chain:
        for marker in block.markers:
            if marker.startswith("fixture "):
                name = marker.split(None, 1)[1]
                parts.append(f"import doc_fixtures\nglobals().update(doc_fixtures.{name}())\n")
        text = block.text
        for marker in block.markers:
            found = REPLACE.match(marker)
            if found:
                text = text.replace(found.group(1), found.group(2))
        parts.append(f"# {block.where}\n{text}")
    return "\n".join(parts)


NUMBER = re.compile(r"[-+]?\d+(?:\.(\d+))?(?:e([-+]?\d+))?")


def _numbers_match(quoted, printed):
    """Same digits, or within one unit of the last digit quoted for a decimal number."""
    if quoted == printed:
        return True
    q, p = NUMBER.fullmatch(quoted), NUMBER.fullmatch(printed)
    if q.group(1) is None or p.group(1) is None:
        return False  # integers (counts, steps, epochs) must be equal
    unit = 10.0 ** (-len(q.group(1)) + int(q.group(2) or 0))
    return abs(float(quoted) - float(printed)) <= unit * 1.0001


def line_matches(quoted, printed):
    """Whether a printed line is the quoted one: the same text around the numbers and
    each number within one unit of its last quoted decimal; a quoted line ending in
    "…" is a prefix of the printed one."""
    quoted = quoted.rstrip()
    prefix = quoted.endswith("…")
    quoted = quoted.rstrip("…").rstrip() if prefix else quoted
    q_numbers = [m.group(0) for m in NUMBER.finditer(quoted)]
    p_numbers = [m.group(0) for m in NUMBER.finditer(printed)]
    q_text, p_text = NUMBER.sub("#", quoted), NUMBER.sub("#", printed.rstrip())
    if prefix:
        if not p_text.startswith(q_text):
            return False
        p_numbers = p_numbers[: len(q_numbers)]
    elif q_text != p_text:
        return False
    return len(q_numbers) == len(p_numbers) and all(
        _numbers_match(q, p) for q, p in zip(q_numbers, p_numbers))


def missing_lines(quoted_text, output):
    """The quoted lines not found, in order, in the printed output."""
    printed, position, missing = output.splitlines(), 0, []
    for line in (line for line in quoted_text.splitlines() if line.strip(" …")):
        hit = next((i for i in range(position, len(printed)) if line_matches(line, printed[i])),
                   None)
        if hit is None:
            missing.append(line)
        else:
            position = hit + 1
    return missing
