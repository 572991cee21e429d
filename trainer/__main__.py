"""``python -m mindgap.trainer``: the ``mindgap train`` command (the same flags).

Run it under ``torchrun --nproc_per_node N -m mindgap.trainer ...`` for several processes;
rank 0 prints the summary as JSON on the last line.
"""

from __future__ import annotations

import typer

from mindgap.cli import train

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(train)

if __name__ == "__main__":
    app(prog_name="python -m mindgap.trainer")
