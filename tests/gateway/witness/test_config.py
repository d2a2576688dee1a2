"""The witness settings: a quorum K larger than the N configured witnesses is refused at
start-up (/readyz could never pass)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import Settings

WITNESS = "http://w1.test:8400 w1.test/w+01234567+BAAA"


def test_a_quorum_above_the_witnesses_is_refused():
    with pytest.raises(ValidationError, match="audit_witness_quorum=2 is more than the 1"):
        Settings(audit_witnesses=[WITNESS], audit_witness_quorum=2)
    with pytest.raises(ValidationError, match="audit_witness_quorum=1 is more than the 0"):
        Settings(audit_witness_quorum=1)


def test_a_quorum_up_to_the_witnesses_is_accepted():
    assert Settings(audit_witnesses=[WITNESS], audit_witness_quorum=1).audit_witness_quorum == 1
    assert Settings(audit_witnesses=[WITNESS, WITNESS], audit_witness_quorum=0)
    assert Settings().audit_witness_quorum == 0
