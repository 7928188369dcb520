"""Cohort's recorder SDK: record an agent's run as a Trae trajectory, crash-safely, to a file or
the collector. See `cohort.sdk.recorder` (API), `cohort.sdk.journal` (storage, recovery, file
format) and `cohort.sdk.sinks` (file and collector delivery)."""

from cohort.sdk.journal import JournalInUse, load_recorded, recover_journal, recover_path
from cohort.sdk.recorder import TrajectoryRecorder, record_agent
from cohort.sdk.sinks import CollectorSink, FileSink

__all__ = [
    "CollectorSink",
    "FileSink",
    "JournalInUse",
    "TrajectoryRecorder",
    "load_recorded",
    "record_agent",
    "recover_journal",
    "recover_path",
]
