"""The content workload is an extra: without Pillow and PyAV it says how to get them."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_EXTRA = "import sys; sys.modules['PIL'] = None; sys.modules['av'] = None; "


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA + code], capture_output=True, text=True, timeout=60
    )


def test_loading_the_content_handler_names_the_extra() -> None:
    done = run(
        "from steadyq.runner import load_handler\n"
        "from steadyq.errors import HandlerLoadError\n"
        "try:\n    load_handler('steadyq.content:handle')\n"
        "except HandlerLoadError as exc:\n    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "needs Pillow and PyAV: pip install 'steadyq[content]'" in done.stdout


def test_the_core_and_its_command_line_work_without_it() -> None:
    done = run(
        "import steadyq, steadyq.cli, steadyq.worker, steadyq.gate\n"
        'print(steadyq.Gate().check(b\'{"request_id": "6f9619ff-8b86-d011-b42d-00c04fc964ff"}\'))'
    )
    assert done.returncode == 0, done.stderr
    assert "request_id='6f9619ff-8b86-d011-b42d-00c04fc964ff'" in done.stdout
