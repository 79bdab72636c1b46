"""A Python process with Keras and without kbn, for the tests that check a saved `.keras`
file loads with plain Keras and predicts as the model it was saved from.

    with PlainKeras() as plain:
        error = plain.relative_error(path, x, expected)

One process serves every file of a test module: starting Python with TensorFlow costs
seconds, loading one small model a fraction of that.
"""

import json
import os
import subprocess
import sys

import numpy as np

_SERVER = """
import json, sys
import keras, numpy as np
for line in sys.stdin:
    job = json.loads(line)
    try:
        model = keras.saving.load_model(job["model"])
        x, expected = np.load(job["x"]), np.load(job["expected"])
        actual = keras.ops.convert_to_numpy(model(x))  # predict() would cast x to floatx
        error = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
        kbn = [name for name in sys.modules if name == "kbn" or name.startswith("kbn.")]
        answer = {"error": float(error), "kbn_modules": kbn}
    except Exception as failure:  # noqa: BLE001 - the test reports it
        answer = {"failure": f"{type(failure).__name__}: {failure}"[-2000:]}
    print("ANSWER " + json.dumps(answer), flush=True)
"""


class PlainKeras:
    """The process; `relative_error` asks it to load one file."""

    def __enter__(self):
        # No PYTHONPATH and a neutral working directory keep the worktree's kbn off the
        # path; should Keras import kbn anyway (an installed copy), the answer says so.
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env, cwd="/")
        return self

    def __exit__(self, *exc_info):
        self.process.stdin.close()
        self.process.wait(timeout=60)
        return False

    def relative_error(self, path, x, expected):
        """max |loaded(x) − expected| / max |expected|, with kbn never imported.

        Args:
            path: A saved `.keras` file; `x` and `expected` are saved beside it.
            x: The model's input.
            expected: The saved model's prediction for `x`.
        """
        np.save(f"{path}.x.npy", x)
        np.save(f"{path}.expected.npy", expected)
        job = {"model": path, "x": f"{path}.x.npy", "expected": f"{path}.expected.npy"}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("ANSWER "):
                answer = json.loads(line[len("ANSWER "):])
                break
        else:
            raise AssertionError(f"the plain-Keras process ended (status {self.process.poll()})")
        assert "failure" not in answer, answer["failure"]
        assert not answer["kbn_modules"], f"loading imported {answer['kbn_modules']}"
        return answer["error"]
