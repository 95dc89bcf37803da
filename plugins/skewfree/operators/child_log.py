"""A step's output in the task log at the level the step logged it, with TensorFlow's known noise turned down.

The step process logs ``%(asctime)s %(levelname)s %(name)s: %(message)s`` (``pipelines.cli``); every other line
(a traceback, TensorFlow's C++ ``E0000``/``W0000`` lines, the result JSON) keeps INFO, except known noise.
"""

from __future__ import annotations

import logging
import re

STEP_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): (.*)$")
CPP_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ \S+\] (.*)$")  # absl/TensorFlow C++ logging
CPP_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}

# Lines every run prints on a machine without a GPU or with this TF build, which say nothing about the run.
NOISE = (
    "failed call to cuInit",  # no GPU: the trainer's own preflight reports devices (and fails if GPUs were asked)
    "Setting to DenseTensor",  # tfx_bsl, once per feature per TFXIO read
    "To enable the following instructions",  # TF built without AVX512 etc.
    "This TensorFlow binary is optimized",
    "oneDNN custom operations are on",
    "Unable to register cu",  # cuDNN/cuFFT/cuBLAS factories on a CPU-only machine
    "computation placer already registered",
    "All log messages before absl::InitializeLog() is called",
    "Could not find cuda drivers",
    "TF-TRT Warning",
    "cache key varies on repeated tracing",  # TFT: "safe to ignore" when analyzers run in a fixed order (ours do)
    "has no shape. Setting to varlen_sparse_tensor",  # tfx_bsl: how it reads every nullable column
    "struct2tensor is not available.",  # TFT probing optional op libraries
    "tensorflow_decision_forests is not available.",
    "tensorflow_text is not available.",
    "Assets written to:",  # TF, for every SavedModel TFT writes in its temp dir
    "BatchElements statistics",  # Beam's batch-size tuning, one long line per bundle
    "WriteImpl min_shards undef",  # Beam: one shard per bundle, as transform asks
    "Creating state cache with size",  # Beam's worker start-up
    "Renamed 1 shards in",  # Beam's sink finalising (transform logs what it wrote)
    "Sharding callback duration",  # tf.data, once per epoch
    "contains input name(s)",  # SavedModel export renaming captured resources (absl, harmless)
    "use_unbounded_threadpool which is not in the op definition",  # tf.data graph attribute: TF logs it as an
    # ERROR, though the op runs; an internal mismatch of TF 2.21's own ops (nothing for the user to do)
)


ERROR_START = ("error: ", "Traceback (most recent call last):")  # the CLI's failure message; a crash
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b")  # a traceback's last line


def relog(line: str, log: logging.Logger, previous: int | None = None) -> int:
    """Log one line of a step's output at its own level (noise at DEBUG) and return that level. A line that
    continues an error (after ``previous`` was ERROR: the CLI's indented problems, a traceback's frames and its
    exception line) is an error too, as is the CLI's ``error: <step>: ...`` line itself."""
    if any(marker in line for marker in NOISE):
        log.debug("%s", line)
        return logging.DEBUG
    if match := STEP_LINE.match(line):
        level, name, message = match.groups()
        log.log(logging.getLevelName(level), "%s: %s", name, message)
        return logging.getLevelName(level)
    if match := CPP_LINE.match(line):
        log.log(CPP_LEVELS[match.group(1)], "tensorflow: %s", match.group(2))
        return CPP_LEVELS[match.group(1)]
    if line.startswith(ERROR_START) or (previous == logging.ERROR and (line[:1].isspace()
                                                                       or EXCEPTION_LINE.match(line))):
        log.error("%s", line)
        return logging.ERROR
    log.info("%s", line)
    return logging.INFO
