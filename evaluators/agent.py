"""The agent manifest (``agent.toml``): which files the FM may edit and what the evaluator imports.

```toml
[agent]
name = "circle-seed"
entry = "packing.py"            # the module the evaluator's harness imports
editable = ["packing.py"]       # files a mutation may change (relative paths)
self_improve = "improve.py"     # optional: its own improver, run by the `self` operator to write its child
```
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

MANIFEST = "agent.toml"
IGNORED = {"__pycache__", ".git", ".pytest_cache"}


class AgentManifestError(ValueError):
    pass


class AgentManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "agent"
    entry: str
    editable: list[str]
    self_improve: str | None = None
    description: str = ""

    @field_validator("editable")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least one file")
        return v

    @field_validator("entry", "self_improve")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is not None:
            _check_relative(v)
        return v

    @field_validator("editable")
    @classmethod
    def _all_relative(cls, v: list[str]) -> list[str]:
        for p in v:
            _check_relative(p)
        return v


def _check_relative(path: str) -> None:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"{path!r} must be a relative path inside the agent directory")


def load_manifest(agent_dir: Path) -> AgentManifest:
    """Read and validate ``agent_dir/agent.toml``; errors name the file and the field."""
    path = Path(agent_dir) / MANIFEST
    if not path.is_file():
        raise AgentManifestError(f"{path}: missing (every agent directory needs an agent.toml)")
    present = {str(p.relative_to(agent_dir)) for p in Path(agent_dir).rglob("*") if p.is_file()}
    return parse_manifest(path.read_text(), present, source=str(path))


def parse_manifest(text: str, present: set[str] | dict, *, source: str = MANIFEST) -> AgentManifest:
    """Validate an agent.toml's text against the set of files the agent holds."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise AgentManifestError(f"{source}: not valid TOML: {e}") from None
    if "agent" not in data or not isinstance(data["agent"], dict):
        raise AgentManifestError(f"{source}: needs an [agent] table")
    try:
        manifest = AgentManifest(**data["agent"])
    except ValidationError as e:
        raise AgentManifestError(f"{source}: {_describe(e)}") from None
    for rel in [manifest.entry, *manifest.editable, *filter(None, [manifest.self_improve])]:
        if rel not in present:
            raise AgentManifestError(f"{source}: [agent] names {rel!r}, which is not a file of the agent")
    return manifest


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        value = err.get("input")
        parts.append(f"[agent].{loc} = {value!r}: {err['msg']}")
    return "; ".join(parts)


def copy_agent(src: Path, dest: Path) -> None:
    """Copy an agent's files (not caches) into ``dest`` (created if needed)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*IGNORED), dirs_exist_ok=True)
