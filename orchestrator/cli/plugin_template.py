"""``dgm init DIR --template plugin``: a working evaluator plugin package, ready to pip-install."""

from __future__ import annotations

import re
from pathlib import Path

import click

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "plugin"


def names(raw: str) -> dict[str, str]:
    name = re.sub(r"[^a-z0-9_]", "_", raw.lower()).strip("_")
    if not name or not name[0].isalpha():
        raise click.BadParameter(f"{raw!r}: a plugin name must start with a letter", param_hint="--name")
    return {
        "name": name,
        "pkg": f"dgm_{name}",
        "dist": f"dgm-{name.replace('_', '-')}",
        "cls": "".join(part.capitalize() for part in name.split("_")) + "Evaluator",
    }


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def write_plugin(dest: Path, name: str | None) -> Path:
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise click.ClickException(f"{dest} exists and is not empty; choose another directory")
    values = {**names(name or dest.resolve().name), "dir": str(dest)}
    pkg = dest / "src" / values["pkg"]
    (pkg / "seed").mkdir(parents=True)
    layout = {
        "pyproject.toml.tmpl": dest / "pyproject.toml",
        "README.md.tmpl": dest / "README.md",
        "campaign.toml.tmpl": dest / "campaign.toml",
        "evaluator.py.tmpl": pkg / "evaluator.py",
        "harness.py.tmpl": pkg / "harness.py",
        "seed/agent.toml": pkg / "seed" / "agent.toml",
        "seed/solution.py": pkg / "seed" / "solution.py",
        "seed/improve.py": pkg / "seed" / "improve.py",
        "seed/improver_kit.py": pkg / "seed" / "improver_kit.py",
    }
    for src, out in layout.items():
        out.write_text(_fill((TEMPLATE / src).read_text(), values))
    (pkg / "__init__.py").write_text(f'from {values["pkg"]}.evaluator import {values["cls"]}\n\n__all__ = ["{values["cls"]}"]\n')
    return dest
