"""The ``dgm`` command line. Each file here holds one group of commands; errors a person can act on
are printed as one line (``dgm: error: …``) with exit code 2, never as a traceback.
"""

from __future__ import annotations

import sys

import click

from orchestrator.cli.archive_cmds import archive, status
from orchestrator.cli.evaluator_cmds import eval_cmd, evaluators
from orchestrator.cli.init_cmd import init
from orchestrator.cli.model_cmds import model
from orchestrator.cli.remeasure_cmd import remeasure
from orchestrator.cli.report_cmd import report
from orchestrator.cli.run_cmd import run
from orchestrator.cli.ui_cmds import plot, ui
from orchestrator.errors import USER_ERRORS
from sandboxes.cli import sandbox  # the sandbox commands live with the sandboxes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dgm")
def cli() -> None:
    """Darwin-Gödel-style self-improvement campaigns."""


for command in (init, run, remeasure, status, report, archive, evaluators, eval_cmd, model, sandbox, ui, plot):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="dgm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("dgm: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except USER_ERRORS as e:
        click.echo(f"dgm: error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("dgm: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
