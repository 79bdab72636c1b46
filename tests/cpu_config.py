"""What this CPU configuration of TensorFlow can do, for tests whose subject one
configuration lacks, and the other configuration's switch for `make test-other-cpu`.

TensorFlow turns its oneDNN kernels on or off by CPU (`TF_ENABLE_ONEDNN_OPTS`
overrides it when set before TensorFlow loads). Without oneDNN, TensorFlow has
no channels-first convolution on the CPU.

    python -m tests.cpu_config other   # prints the TF_ENABLE_ONEDNN_OPTS value
                                       # that flips this machine's configuration
"""

import os
import re
import subprocess
import sys


_CHILD = "KBN_TEST_SWITCHED_ONEDNN"  # set in the process `run_with_onednn` starts


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels in this process."""
    from kbn import _tf_fast

    return _tf_fast.ONEDNN


def has_channels_first_conv():
    """Whether TensorFlow can run a channels-first (NCHW) convolution here."""
    import tensorflow as tf

    try:
        tf.nn.conv2d(tf.zeros([1, 1, 2, 2]), tf.zeros([1, 1, 1, 1]), 1, "VALID",
                     data_format="NCHW")
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False
    return True


def run_with_onednn(test_id, enabled=True):
    """Runs one test (a pytest node id) in a fresh process with oneDNN switched
    on or off; returns `(passed, output)`."""
    if os.environ.get(_CHILD):
        raise AssertionError(f"{test_id} already runs in a process with TF_ENABLE_ONEDNN_OPTS="
                             f"{os.environ['TF_ENABLE_ONEDNN_OPTS']}; what it needs is missing "
                             "in that configuration too")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if enabled else "0", _CHILD: "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", test_id, "-q", "-p", "no:cacheprovider"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    output = result.stdout + result.stderr
    return result.returncode == 0 and re.search(r"^1 passed", output, re.M) is not None, output


if __name__ == "__main__":
    if sys.argv[1:] != ["other"]:
        sys.exit("usage: python -m tests.cpu_config other")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("0" if onednn_enabled() else "1")
