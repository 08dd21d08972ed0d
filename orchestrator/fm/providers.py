"""``open_fm(cfg)``: an ``FMClient`` for the configured provider, with whatever it needs running.

    with open_fm(cfg.fm) as fm:
        completion = fm.complete(messages, temperature=0.7, seed=3, max_tokens=cfg.fm.max_tokens)

- ``embedded``: assemble/cache the GGUF (``ensure_model``) unless ``model_path`` is given, start
  the llama.cpp child process (``EmbeddedServer``), talk to it on 127.0.0.1 with a dummy key.
- ``openai``:  any OpenAI-protocol endpoint at ``base_url``; the key comes from ``api_key_env``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .client import EMBEDDED_API_KEY, FMClient
from .config import FMConfig
from .embedded import EmbeddedServer
from .model_store import ensure_model


@contextmanager
def open_fm(
    cfg: FMConfig,
    *,
    log: Callable[[str], None] = print,
    cache_dir: Path | None = None,
    server_log_path: Path | None = None,
) -> Iterator[FMClient]:
    """Yield a ready client; on exit close it and stop the embedded server if one was started."""
    if cfg.provider == "openai":
        with FMClient.from_config(cfg) as client:
            yield client
        return

    model_path = cfg.model_path or ensure_model(cache_dir, log=log)
    server = EmbeddedServer(model_path, n_ctx=cfg.n_ctx, n_parallel=cfg.n_parallel,
                            n_threads=cfg.n_threads, alias=cfg.model,
                            start_timeout_s=cfg.start_timeout_s, log_path=server_log_path, log=log)
    with server, FMClient.from_config(cfg, base_url=server.base_url, api_key=EMBEDDED_API_KEY) as client:
        yield client
