"""Training-file ingestion as a pure library: validation, hashing, PII, datasheet, gates.

No HTTP and no database here: the gateway's routes call these functions and record what
they return. Entry points:

- ``ingest`` / ``IngestSession``: one streaming pass over an upload -> ``IngestResult``
- ``min_examples_gate``, ``overlap_gate``: job-time data gates
- ``find_subject_lines``: erasure look-up in a stored file
"""

from ingest.dedup import Fingerprint, fingerprint_path, overlap
from ingest.erasure import SubjectMatches, find_subject_lines
from ingest.gates import GateResult, min_examples_gate, overlap_gate
from ingest.pii import RECOGNISER_SET_VERSION, PiiFinding, redact_text, scan_text
from ingest.pipeline import (
    FileTooLarge,
    IngestError,
    IngestLimits,
    IngestResult,
    IngestSession,
    InsufficientStorage,
    InvalidIngestSettings,
    RedactionLineage,
    ReportSettings,
    ScanPool,
    StoredFile,
    content_path,
    ingest,
)
from ingest.report import Datasheet

__all__ = [
    "RECOGNISER_SET_VERSION",
    "Datasheet",
    "FileTooLarge",
    "Fingerprint",
    "GateResult",
    "IngestError",
    "IngestLimits",
    "IngestResult",
    "IngestSession",
    "InsufficientStorage",
    "InvalidIngestSettings",
    "PiiFinding",
    "RedactionLineage",
    "ReportSettings",
    "ScanPool",
    "StoredFile",
    "SubjectMatches",
    "content_path",
    "find_subject_lines",
    "fingerprint_path",
    "ingest",
    "min_examples_gate",
    "overlap",
    "overlap_gate",
    "redact_text",
    "scan_text",
]
