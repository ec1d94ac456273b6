"""How ccm's processes log: one format, set up once per process (`ccm run`, each of its workers)."""

from __future__ import annotations

import logging
import os
import sys

LEVEL_VARIABLE = "CCM_LOG_LEVEL"  # how `ccm run --workers N` hands its level to the workers


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    os.environ[LEVEL_VARIABLE] = level
    # httpx logs every upstream request at INFO: a second line per request (ccm.attempt already names it) and
    # formatting work on the hot path. Its warnings still show; --log-level debug shows everything.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    # What the lines do not show, not gathered for every record (the logging HOWTO's "Optimization"): the caller's
    # file and line (a frame walk per record), the thread, the process and its name.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
