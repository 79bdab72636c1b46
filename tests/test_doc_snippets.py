"""The docs' python blocks run, and their quoted output is checked or dated.

Every ```python block of README.md and docs/*.md runs in a fresh process
(TensorFlow backend, a temporary working directory, the repository and tests/
on PYTHONPATH) exactly as written, apart from what its markers state
(tests/doc_blocks.py: fixtures from tests/doc_fixtures.py, textual
replacements, fragments that continue the block before); a block that does not
run carries `skip: REASON`. Every other block is a command block
(tests/test_docs.py checks its commands), quoted output that a test here
reproduces (`checked COMMAND`: the command runs, and each quoted line must be
among what it prints, in order, numbers within one unit of their last quoted
digit) or output of a dated run (`example`: the paragraph above names the date
and the configuration).
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

import doc_blocks
import doc_fixtures

BLOCKS = doc_blocks.all_blocks()
PYTHON = [i for i, block in enumerate(BLOCKS) if block.info == "python"]
RUN = [i for i in PYTHON if BLOCKS[i].directive("skip") is None]
OUTPUT = [block for block in BLOCKS
          if block.info != "python" and not doc_blocks.is_command_block(block)]
CHECKED = [block for block in OUTPUT if block.directive("checked")]
DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
EXIT = re.compile(r"\s*\(exit (\d+)\)$")


def _env():
    path = os.pathsep.join([doc_blocks.ROOT, os.path.join(doc_blocks.ROOT, "tests")])
    return dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_program(text, where, cwd, timeout=300):
    """Runs a block's program in a fresh process; the failure names the block."""
    script = os.path.join(cwd, "snippet.py")
    with open(script, "w", encoding="utf-8") as file:
        file.write(text)
    done = subprocess.run([sys.executable, script], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        pytest.fail(f"{where}: the block fails (exit {done.returncode}):\n{tail}", pytrace=False)
    return done


def test_every_python_block_is_run_or_marked_with_a_reason():
    """Counted from the raw files, not from the parser: nothing is dropped unseen."""
    fences = sum(
        len(re.findall(r"^```python\s*$",
                       open(os.path.join(doc_blocks.ROOT, path), encoding="utf-8").read(), re.M))
        for path in doc_blocks.doc_paths())
    skipped = [BLOCKS[i] for i in PYTHON if i not in RUN]
    assert len(PYTHON) == fences
    assert len(RUN) == fences - len(skipped)
    assert all(block.directive("skip") for block in skipped), "a skip needs its reason"
    assert len(RUN) >= 1


def test_every_marker_is_known_and_applies():
    errors = [error for block in BLOCKS for error in doc_blocks.marker_errors(block)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("index", RUN, ids=[BLOCKS[i].where for i in RUN])
def test_python_block_runs(index, tmp_path):
    run_program(doc_blocks.source(BLOCKS, index), BLOCKS[index].where, str(tmp_path))


@pytest.mark.parametrize("block", OUTPUT, ids=[block.where for block in OUTPUT])
def test_quoted_output_is_checked_or_an_example(block):
    kinds = [word for word in ("checked", "example", "not output") if block.directive(word)
             is not None]
    assert len(kinds) == 1, (f"{block.where}: neither commands nor code; mark it (one of) "
                             f"`checked COMMAND`, `example` or `not output: REASON`")
    if kinds == ["example"]:
        assert DATE.search(block.before), f"{block.where}: the paragraph above has no date"
        assert re.search(r"oneDNN (on|off)", block.before), \
            f"{block.where}: the paragraph above does not say oneDNN on or off"


def _normal(text):
    return " ".join(text.replace("`", "").split())


@pytest.mark.parametrize("block", CHECKED, ids=[block.where for block in CHECKED])
def test_quoted_output_is_what_the_command_prints(block, tmp_path):
    command = block.directive("checked")
    status = int(EXIT.search(command).group(1)) if EXIT.search(command) else 0
    command = EXIT.sub("", command)
    assert _normal(command) in _normal(block.before), \
        f"{block.where}: the paragraph above does not show `{command}`"
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], f"{block.where}: not a python -m command"
    for name, make in doc_fixtures.FILES.items():
        if name in words:
            make(str(tmp_path / name))
    done = subprocess.run([sys.executable, *words[1:]], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    tail = "\n".join(done.stderr.strip().splitlines()[-10:])
    assert done.returncode == status, f"{block.where}: `{command}` exit {done.returncode}\n{tail}"
    missing = doc_blocks.missing_lines(block.text, done.stdout)
    assert not missing, (f"{block.where}: `{command}` does not print (in this order):\n"
                         + "\n".join(missing) + "\n--- it printed:\n" + done.stdout[-3000:])


# The machinery itself, on a made-up page.
PAGE = """# A page

Some prose.

```python
print(undefined_name)
```

<!-- snippet: fixture digits_model -->
<!-- snippet: replace `epochs=50` with `epochs=1` -->
```python
model.fit(x, y, epochs=50)
```

<!-- snippet: continues -->
```python
model.evaluate(x, y)
```

<!-- snippet: replace `absent` with `x` -->
<!-- snippet: fixture no_such_fixture -->
<!-- snippet: frobnicate -->
<!-- snippet: example -->
```python
pass
```

Measured 2026-12-02, TensorFlow 2.21, oneDNN off:

<!-- snippet: example -->
```
loss 0.1234
```

```
python -m train.train: error: no
```
"""


def _page(tmp_path):
    os.makedirs(tmp_path / "docs")
    (tmp_path / "docs" / "page.md").write_text(PAGE, encoding="utf-8")
    return doc_blocks.read_blocks("docs/page.md", root=str(tmp_path))


def test_a_failing_block_is_reported_with_its_file_and_line(tmp_path):
    blocks = _page(tmp_path)
    assert [block.line for block in blocks] == [5, 11, 16, 24, 31, 35]
    with pytest.raises(pytest.fail.Exception) as failure:
        run_program(doc_blocks.source(blocks, 0), blocks[0].where, str(tmp_path))
    assert "docs/page.md:5: the block fails (exit 1)" in str(failure.value)
    assert "NameError: name 'undefined_name' is not defined" in str(failure.value)


def test_markers_make_the_program_and_bad_ones_are_reported(tmp_path):
    blocks = _page(tmp_path)
    program = doc_blocks.source(blocks, 2)
    assert program.index("doc_fixtures.digits_model()") < program.index("epochs=1)") \
        < program.index("model.evaluate")
    assert "epochs=50" not in program and "undefined_name" not in program
    assert doc_blocks.marker_errors(blocks[1]) == [] == doc_blocks.marker_errors(blocks[2])
    errors = doc_blocks.marker_errors(blocks[3])
    assert len(errors) == 4 and all(error.startswith("docs/page.md:24: ") for error in errors)
    assert "the block has no 'absent'" in errors[0] and "no such function" in errors[1]
    assert "unknown marker" in errors[2] and "does not apply to a python block" in errors[3]
    assert DATE.search(blocks[4].before) and "oneDNN off" in blocks[4].before
    assert not doc_blocks.is_command_block(blocks[5])


def test_quoted_lines_match_to_their_last_digit():
    match = doc_blocks.line_matches
    assert match("acc 0.3008 loss 2.17", "acc 0.3009 loss 2.16")
    assert not match("acc 0.3008", "acc 0.3010") and not match("acc 0.3008", "acc 0.3008 more")
    assert match("max 3.4e-02 over 2 epochs", "max 3.5e-02 over 2 epochs")
    assert not match("over 2 epochs", "over 3 epochs")  # integers are exact
    assert match("x̂₁ = 1.1414   …", "x̂₁ = 1.1414   x̂₂ = -1.5635")
    assert doc_blocks.missing_lines("b 2\na 1\n…\n", "a 1\nb 2\n") == ["a 1"]  # in order
