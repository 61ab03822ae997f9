"""The ``assay`` command. Each command parses its arguments and calls one public function.

Exit codes: 0 success or gate passed, 1 gate failed or release refused (promoting a version whose gate
failed, rolling back with nothing to go back to), 2 bad usage, configuration or data, 130 interrupted.
User errors print one line, never a traceback. ``--json`` prints the result document on stdout alone.

    common.py     what every command shares (consoles, options, errors, JSON, tables)
    commands.py   demo, run, train, eval, gate, report, policy, models ...
    data.py       assay data ...          trust.py     assay trust
    serve.py      assay serve, incidents  compress.py  assay compress, variants, cost
    llm.py        assay llm ...
"""

from assay.cli.commands import app
from assay.cli.compress import compress_cmd, cost_cmd, variants_app
from assay.cli.data import data_app
from assay.cli.llm import llm_app
from assay.cli.serve import incidents_app, serve_cmd
from assay.cli.trust import trust_cmd

app.add_typer(data_app, name="data")
app.command("trust")(trust_cmd)
app.command("serve")(serve_cmd)
app.add_typer(incidents_app, name="incidents")
app.command("compress")(compress_cmd)
app.add_typer(variants_app, name="variants")
app.command("cost")(cost_cmd)
app.add_typer(llm_app, name="llm")


def main() -> None:
    app()


__all__ = ["app", "main"]
