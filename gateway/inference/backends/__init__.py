"""Inference backends behind one small interface (base.InferenceBackend).

``make_backend(settings)`` builds the one settings select. ``local`` and ``vllm`` are
imported only when selected, so torch (or vLLM) is never imported by a gateway that does
not serve with it."""

from __future__ import annotations

import importlib
from typing import Any

from gateway.inference.backends.base import InferenceBackend

# setting -> (module, factory): each module offers `make_backend(settings)` or a class.
_MODULES = {
    "local": "gateway.inference.backends.local",
    "vllm": "gateway.inference.backends.vllm",
}


def make_backend(settings: Any) -> InferenceBackend:
    kind = settings.inference_backend
    if kind == "noop":
        from gateway.inference.backends.noop import NoopBackend

        return NoopBackend()
    if kind not in _MODULES:
        raise ValueError(f"unknown inference backend {kind!r}")
    module = importlib.import_module(_MODULES[kind])
    factory = getattr(module, "make_backend", None)
    if factory is None:
        raise ValueError(f"{_MODULES[kind]} offers no make_backend(settings)")
    backend = factory(settings)
    if not isinstance(backend, InferenceBackend):
        raise TypeError(f"{_MODULES[kind]}.make_backend did not return an InferenceBackend")
    return backend
