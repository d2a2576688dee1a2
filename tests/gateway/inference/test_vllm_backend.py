"""The vllm backend without vLLM: it is an optional GPU extra, never installed by `make test`
(bench/gpu_check.sh exercises it on a GPU). Here: a clear refusal, not an ImportError."""

from __future__ import annotations

import importlib.util

import pytest

from gateway.config import Settings
from gateway.inference.backends import make_backend
from gateway.inference.backends.base import BackendError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vllm is installed here"
)


def test_the_module_imports_without_vllm():
    from gateway.inference.backends import vllm as module

    assert module.VllmBackend.name == "vllm"


def test_selecting_vllm_without_the_extra_is_refused_clearly():
    with pytest.raises(BackendError) as refused:
        make_backend(Settings(inference_backend="vllm"))
    assert refused.value.code == "backend_unavailable"
    assert refused.value.status == 503
    assert "tunegate[vllm]" in refused.value.message
