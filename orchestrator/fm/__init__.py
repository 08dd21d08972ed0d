"""Foundation-model access: config, client, the embedded llama.cpp server, the sandbox proxy.

Names are imported lazily so that ``python -m orchestrator.fm.embedded_server`` (the model's
child process) does not pay for importing ``openai``.
"""

from importlib import import_module

_EXPORTS = {
    "Completion": "client", "FMClient": "client", "FMConfigError": "client", "FMError": "client",
    "UsageTotals": "client", "resolve_api_key": "client",
    "FMConfig": "config", "Prices": "config",
    "EmbeddedServer": "embedded", "EmbeddedServerError": "embedded",
    "ensure_model": "model_store", "ModelStoreError": "model_store",
    "open_fm": "providers",
    "Budget": "proxy", "FMProxy": "proxy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
