"""Moments of a run where a test can make it wait for a stop signal, so that the signal lands
inside that moment on any machine (a checkpoint write lasts milliseconds).

With APRELU_PAUSE_AT=<moment> (training: after the second training step of an epoch, validation,
checkpoint, report) the run, on reaching that moment from
its second epoch on (so that a completed epoch is there to keep), creates the file named by
APRELU_PAUSE_MARKER and waits there until a stop signal comes (ten minutes at most). Without the
variable nothing happens.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from aprelu_exp.runs.stop import stop_requests

PAUSE_VAR, MARKER_VAR = "APRELU_PAUSE_AT", "APRELU_PAUSE_MARKER"
MOMENTS = ("training", "validation", "checkpoint", "report")
PAUSE_LIMIT_S = 600


def reached(moment: str, epoch: int) -> None:
    if os.environ.get(PAUSE_VAR) != moment or epoch < 1 or stop_requests.requested():
        return
    Path(os.environ[MARKER_VAR]).touch()
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while not stop_requests.requested() and time.monotonic() < deadline:
        time.sleep(0.01)
