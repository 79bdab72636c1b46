"""The README's and docs' commands exist, and their links resolve.

Every `python -m <module> <flags>` the documentation shows — a line of a shell
code block (line continuations joined, `NAME=value` prefixes stripped) or an
inline code span that starts with `python -m` — must name an importable
module whose own argument parser accepts those flags (a bare module named
in prose, "compared with `python -m train.diff_runs`", is only imported). The
commands are not run: one Python process runs each module with `runpy` after
patching `argparse.ArgumentParser.parse_known_args` to parse, report what it
could not parse, and stop before the module does anything else. Every `make <target>`
must be a target of the Makefile. Placeholders (`<run folder>`, `…`) are
skipped; lines of other programs (tensorboard, pip, export, …) are not
commands of this project.
"""

import dataclasses
import json
import os
import re
import shlex
import textwrap

from tiny_runs import QUIET, run_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(
    os.path.join("docs", name)
    for name in os.listdir(os.path.join(ROOT, "docs"))
    if name.endswith(".md")
)
SHELL_FENCES = ("", "sh", "bash", "shell", "console")
PLACEHOLDER_MARKS = ("<", ">", "…")
ENV_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Modules of other projects that a doc may show (`python -m pip install ...`).
OTHER_PROGRAMS = ("pip", "pytest", "venv", "tensorboard")


@dataclasses.dataclass(frozen=True)
class Command:
    where: str  # "docs/speed.md:12"
    text: str
    program: str  # "python" or "make"
    words: tuple  # module and flags, or make targets
    parse: bool = True  # False: an inline mention of a bare module, imported only


def _blocks(path):
    """Yields (line number, text, is_shell_code) for each shell code line (continuations
    joined) and each stretch of prose between code blocks (its first line's number)."""
    lines = open(os.path.join(ROOT, path), encoding="utf-8").read().split("\n")
    fence, prose, prose_start, pending, pending_start = None, [], 1, "", 0
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if fence is None:
                fence = line[3:].strip()
                yield prose_start, "\n".join(prose), False
                prose = []
            else:
                fence = None
                prose_start = number + 1
            continue
        if fence is None:
            prose.append(line)
        elif fence in SHELL_FENCES:
            if not pending:
                pending_start = number
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            yield pending_start, pending + line, True
            pending = ""
    yield prose_start, "\n".join(prose), False


def _command(where, text, *, comments):
    """The Command a line or span stands for, or None (another program, output, a placeholder)."""
    try:
        words = shlex.split(text.replace("\n", " "), comments=comments)
    except ValueError:
        return None
    while words and ENV_PREFIX.match(words[0]):
        words = words[1:]
    if not words or any(mark in text.split("#")[0] for mark in PLACEHOLDER_MARKS):
        return None
    words = [word for word in words if not (word.startswith("[") and word.endswith("]"))]
    if words[0] == "make":
        targets = tuple(word for word in words[1:] if not word.startswith("-") and "=" not in word)
        return Command(where, text, "make", targets)
    is_python = os.path.basename(words[0]) in ("python", "python3")
    if not is_python or len(words) < 3 or words[1] != "-m":
        return None
    module = words[2]
    if module.endswith(":") or module.split(".")[0] in OTHER_PROGRAMS:
        return None  # program output ("python -m train.train: error: ...") or not ours
    # `python -m train.diff_runs` alone in prose names the tool; a code line is a command.
    parse = comments or len(words) > 3
    return Command(where, text, "python", tuple(words[2:]), parse)


def documented_commands():
    commands = []
    for path in DOCS:
        for line_number, text, is_code in _blocks(path):
            if is_code:
                command = _command(f"{path}:{line_number}", text, comments=True)
                if command:
                    commands.append(command)
                continue
            for match in INLINE_CODE.finditer(text):
                number = line_number + text[: match.start()].count("\n")
                command = _command(f"{path}:{number}", match.group(1), comments=False)
                if command:
                    commands.append(command)
    return commands


def makefile_targets():
    text = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    return {
        target
        for names in re.findall(r"^([\w.\- ]+?)\s*:(?!=)", text, flags=re.MULTILINE)
        for target in names.split()
        if not target.startswith(".")
    }


# Runs in one fresh process: for each command, `runpy` the module as __main__ with its
# argv; the patched parser parses, then raises _Parsed, so the command never runs.
_CHECKER = textwrap.dedent(
    r'''
    import argparse, contextlib, importlib, importlib.util, io, json, runpy, sys, warnings

    class _Parsed(BaseException):
        """Raised by the patched parser: argv parsed (args[0] is None) or the error."""

    original = argparse.ArgumentParser.parse_known_args
    depth = [0]

    def parse_known_args(self, args=None, namespace=None):
        if depth[0]:  # a sub-parser inside the outer parse
            return original(self, args, namespace)
        depth[0] += 1
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                _, extras = original(self, args, namespace)
        except SystemExit as exit:
            lines = stderr.getvalue().strip().splitlines()
            raise _Parsed(None if exit.code == 0 else (lines[-1] if lines else f"exit {exit.code}"))
        finally:
            depth[0] -= 1
        raise _Parsed("unrecognized arguments: " + " ".join(extras) if extras else None)

    request, answer = sys.argv[1:3]
    argparse.ArgumentParser.parse_known_args = parse_known_args
    warnings.simplefilter("ignore")

    def check(parse, module, args):
        try:
            spec = importlib.util.find_spec(module)
            if spec is not None and not parse:
                importlib.import_module(module)
        except Exception as error:
            return f"cannot import: {type(error).__name__}: {error}"
        if spec is None:
            return f"no module named {module}"
        if not parse:
            return None
        source = open(spec.origin, encoding="utf-8").read() if spec.origin else ""
        if "__main__" not in source:
            return "not a command-line module (no __main__ block)"
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except _Parsed as parsed:
            return parsed.args[0]
        except SystemExit as exit:
            return f"exited ({exit.code}) before parsing its flags"
        except Exception as error:
            return f"{type(error).__name__}: {error}"
        return "ran to its end without parsing its flags"

    with open(request) as file:
        results = [check(parse, module, args) for parse, module, *args in json.load(file)]
    with open(answer, "w") as file:
        json.dump(results, file)
    '''
)


def test_the_docs_show_the_front_page_commands():
    """The extraction itself finds what the README's first screen shows."""
    commands = documented_commands()
    modules = {command.words[0] for command in commands if command.program == "python"}
    targets = {word for command in commands if command.program == "make" for word in command.words}
    assert {"train.compare", "train.train", "train.explain", "train.paper"} <= modules
    assert {"test", "run", "paper", "bench"} <= targets
    assert any("--strategy" in command.words for command in commands)


def test_every_make_target_in_the_docs_exists():
    targets = makefile_targets()
    assert {"run", "test"} <= targets, targets
    missing = [
        f"{command.where}: make {target}   (in: {command.text.strip()})"
        for command in documented_commands()
        if command.program == "make"
        for target in command.words
        if target not in targets
    ]
    assert not missing, "documented make targets missing from the Makefile:\n" + "\n".join(missing)


def test_every_python_command_in_the_docs_parses(tmp_path):
    commands = [command for command in documented_commands() if command.program == "python"]
    request, answer = tmp_path / "commands.json", tmp_path / "results.json"
    request.write_text(json.dumps([[command.parse, *command.words] for command in commands]))
    process = run_python("-c", _CHECKER, str(request), str(answer), env=QUIET, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    errors = json.loads(answer.read_text())
    assert len(errors) == len(commands)
    failing = [
        f"{command.where}: {command.text.strip()}\n    -> {error}"
        for command, error in zip(commands, errors)
        if error is not None
    ]
    summary = f"{len(failing)} of {len(commands)} documented commands fail:"
    assert not failing, "\n".join([summary, *failing])


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path):
    anchors, seen, fence = set(), {}, False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            slug = _slug(line.lstrip("#"))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for path in DOCS:
        for line_number, text, is_code in _blocks(path):
            if is_code:
                continue
            prose = INLINE_CODE.sub(lambda code: "\n" * code.group(0).count("\n"), text)
            for match in LINK.finditer(prose):
                target = match.group(1)
                if re.match(r"[a-z]+:", target):
                    continue  # http:, https:, mailto:
                file_part, _, anchor = target.partition("#")
                here = os.path.join(ROOT, path)
                resolved = os.path.normpath(
                    os.path.join(os.path.dirname(here), file_part) if file_part else here
                )
                where = f"{path}:{line_number + prose[: match.start()].count(chr(10))}"
                if not os.path.exists(resolved):
                    broken.append(f"{where}: {target} (no such file)")
                elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
                    broken.append(f"{where}: {target} (no such heading)")
    assert not broken, "broken links in the docs:\n" + "\n".join(broken)


# A mention of the README or of docs/<name>.md in train/'s sources (docstrings, --help texts,
# comments), with an optional "#anchor" or ": Section heading"; and paths of this repository.
DOC_REFERENCE = re.compile(
    r"\b(README(?:\.md)?|docs/[\w-]+\.md)(?:#([\w-]+)|: ([A-Z][^)(\n\";,]*))?")
SOURCE_PATH = re.compile(r"\b((?:train|kbn|tests|benchmarks)/[\w/]+\.py)\b")


def broken_references(text):
    """The references in `text` that point nowhere: no such file, no such heading, or a
    README mention that names no section (the README is long; "the README's experiment"
    sends a reader nowhere in particular)."""
    broken = []
    for match in DOC_REFERENCE.finditer(text):
        name, anchor, section = match.groups()
        path = os.path.join(ROOT, "README.md" if name.startswith("README") else name)
        heading = anchor or (section and _slug(section.rstrip(" .:'")))
        if not os.path.exists(path):
            broken.append(f"{match.group(0)!r} (no such file)")
        elif heading and heading not in _anchors(path):
            broken.append(f"{match.group(0)!r} (no such heading in {name})")
        elif name.startswith("README") and not heading:
            broken.append(f"{match.group(0)!r} (names no section of the README)")
    broken += [f"{match.group(0)!r} (no such file)" for match in SOURCE_PATH.finditer(text)
               if not os.path.exists(os.path.join(ROOT, match.group(0)))]
    return broken


def test_broken_references_are_found():
    # The two of issue 17: the README's section moved to docs/distributed.md, and the
    # recalibration experiment is in docs/tools.md.
    assert broken_references("(see README: More than one machine)")
    assert broken_references("python -m train.recalibration   # the README's experiment")
    assert broken_references("see docs/nowhere.md") and broken_references("docs/pipeline.md#x")
    assert broken_references("train/run/nowhere.py")
    assert not broken_references("see docs/distributed.md, README: What's inside;"
                                 " docs/pipeline.md#every-backend and train/run/runs.py")


def test_every_reference_in_train_points_somewhere():
    """train/'s docstrings and --help texts name docs, sections and files that exist."""
    broken = []
    for folder, _, names in os.walk(os.path.join(ROOT, "train")):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                text = open(path, encoding="utf-8").read()
                broken += [f"{os.path.relpath(path, ROOT)}: {reference}"
                           for reference in broken_references(text)]
    assert not broken, "references that point nowhere:\n" + "\n".join(broken)
