"""Pick a sandbox backend by name; ``auto`` means the strongest isolation this machine offers.

Untrusted code must never silently end up in the ``process`` backend, so ``auto`` never picks it:
with neither bwrap nor docker available it fails with the command that installs one.
"""

from __future__ import annotations

import logging
from typing import Any

from .base import Sandbox, SandboxError

log = logging.getLogger(__name__)

BACKENDS = ("bwrap", "docker", "process")
NO_BACKEND_HINT = (
    "no isolating sandbox backend is available on this machine: install bubblewrap "
    "(apt-get install -y bubblewrap) or docker (apt-get install -y docker.io and start dockerd); "
    "for trusted code only, use backend='process' with trusted=True"
)


def _cls(name: str) -> type[Sandbox]:
    if name == "bwrap":
        from .bwrap import BwrapSandbox

        return BwrapSandbox
    if name == "docker":
        from .docker_backend import DockerSandbox

        return DockerSandbox
    if name == "process":
        from .process import ProcessSandbox

        return ProcessSandbox
    raise SandboxError(f"unknown sandbox backend {name!r}: choose one of auto, {', '.join(BACKENDS)}")


def available_backends() -> list[str]:
    """Backends that can run here, strongest first (``process`` is always last and always there)."""
    out = []
    for name in BACKENDS:
        try:
            if _cls(name).available():
                out.append(name)
        except Exception as e:  # a broken optional backend must not hide the others
            log.debug("backend %s unavailable: %s", name, e)
    return out


def make_sandbox(backend: str = "auto", *, trusted: bool = False, **opts: Any) -> Sandbox:
    """Build a sandbox. ``opts`` go to the backend's constructor (e.g. ``cgroups=False``).

    ``process`` isolates nothing: it is allowed only with ``trusted=True`` and logs a warning.
    """
    backend = (backend or "auto").lower()
    if backend == "auto":
        for name in ("bwrap", "docker"):
            try:
                if _cls(name).available():
                    return _cls(name)(**opts)
            except SandboxError:
                raise
            except Exception as e:
                log.debug("backend %s unavailable: %s", name, e)
        raise SandboxError(NO_BACKEND_HINT)
    cls = _cls(backend)
    if backend == "process":
        if not trusted:
            raise SandboxError(
                "the 'process' sandbox backend gives no isolation and may only run trusted code: "
                "pass trusted=True (CLI: --trusted) if you mean it, or use "
                "backend 'bwrap' (apt-get install -y bubblewrap) or 'docker'"
            )
        log.warning("sandbox backend 'process' selected: the command runs unisolated, with this "
                    "user's rights (trusted code only)")
        return cls(**opts)
    if not cls.available():
        reason = getattr(cls, "unavailable_reason", lambda: None)() or "not available"
        raise SandboxError(f"sandbox backend {backend!r} cannot run here: {reason}")
    return cls(**opts)
