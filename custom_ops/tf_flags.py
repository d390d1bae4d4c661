"""Writes the installed TensorFlow's version and compile/link flags as a make fragment.

Usage: python tf_flags.py OUT.mk. The Makefile includes OUT.mk and lists it as a
prerequisite of everything compiled against TensorFlow. The file is rewritten only when its
text changes, so its modification time says when TensorFlow (or its flags) last changed:
a rebuild against the same TensorFlow recompiles nothing, and a different TensorFlow
recompiles everything. One TensorFlow import per make run (it takes seconds).
"""

import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def main(out):
    try:
        import tensorflow as tf
    except Exception as e:  # ImportError, or a broken install
        print(f"tf_flags.py: cannot import tensorflow ({type(e).__name__}: {e})",
              file=sys.stderr)
        # No stale flags from an earlier TensorFlow: the Makefile's check-tf then fails.
        if os.path.exists(out):
            os.remove(out)
        return 1
    text = (f"TF_VERSION := {tf.__version__}\n"
            f"TF_CFLAGS := {' '.join(tf.sysconfig.get_compile_flags())}\n"
            f"TF_LFLAGS := {' '.join(tf.sysconfig.get_link_flags())}\n")
    try:
        with open(out) as f:
            if f.read() == text:
                return 0
    except OSError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        f.write(text)
    os.replace(out + ".tmp", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
