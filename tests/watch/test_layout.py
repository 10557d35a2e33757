"""The watch library does not import its command line (issue 16)."""

from __future__ import annotations

import subprocess
import sys


def test_the_watch_library_imports_no_cli() -> None:
    code = (
        "import sys; import steadyq.watch.run, steadyq.watch.reports, steadyq.watch.measures;"
        " import steadyq.watch.sources.gcloud, steadyq.watch.views;"
        " print([m for m in ('steadyq.watch.cli', 'steadyq.cli', 'typer', 'google.cloud.run_v2')"
        " if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
