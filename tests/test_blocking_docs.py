"""The blocking client's documentation runs: the README's snippet against a simulator, and
examples/blocking.ipynb cell by cell in a real Jupyter kernel."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from alorws import Bar, OrderAck, Quote
from alorws.sim.background import SimulatorThread

from ._sim import DAY


ROOT = Path(__file__).resolve().parent.parent
#: Where the README's snippets point: the simulator's documented default address
#: (`alorws sim --port 8765`). The test serves one on a free port and points the snippet there.
README_URL = "http://127.0.0.1:8765"


def _snippet(heading: str) -> str:
    """The first Python block of the README section ``heading``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, f"no python block under {heading!r}"
    return found[1]


def test_the_readme_blocking_snippet_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The "without asyncio" snippet runs unchanged but for the server's address, its token
    from the environment: a quote, an hour of bars, an order placed and cancelled."""
    code = _snippet("Quick start: without asyncio")
    assert README_URL in code and len(code.strip().splitlines()) <= 8
    with SimulatorThread(port=0, seed=1, rate=50.0, day_order_lifetime=DAY) as sim:
        monkeypatch.setenv("ALOR_REFRESH_TOKEN", sim.demo_refresh_token)
        namespace: dict[str, object] = {}
        exec(compile(code.replace(README_URL, sim.url), "README.md", "exec"), namespace)
    assert isinstance(namespace["quote"], Quote) and namespace["quote"].symbol == "SBER"
    bars = namespace["bars"]
    assert isinstance(bars, list) and bars and isinstance(bars[0], Bar)
    assert isinstance(namespace["ack"], OrderAck) and namespace["ack"].order_number


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client's own
def test_the_notebook_runs_in_a_jupyter_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every cell of examples/blocking.ipynb runs without error in an IPython kernel (whose
    event loop runs while a cell does), and the kernel is shut down afterwards."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))  # no user kernelspec
    monkeypatch.delenv("ALOR_REFRESH_TOKEN", raising=False)
    nb = nbformat.read(ROOT / "examples" / "blocking.ipynb", as_version=4)
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    kernels: list[Any] = []
    runner = nbclient.NotebookClient(
        nb,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        on_notebook_start=lambda **_: kernels.append(runner.km),
    )
    # Raises CellExecutionError on a failing cell; shuts the kernel down either way.
    runner.execute()
    assert len(kernels) == 1 and not kernels[0].has_kernel  # its process is gone
    outputs = [
        "".join(out.get("data", {}).get("text/plain", "") for out in cell.outputs)
        for cell in nb.cells
        if cell.cell_type == "code"
    ]
    assert outputs[0] == "'D00001'"  # the demo account's first portfolio
    assert re.fullmatch(r"\([\d.]+, [\d.]+, [\d.]+\)", outputs[1]), outputs[1]
    assert re.fullmatch(r"\(\d+, [\d.]+\)", outputs[2]), outputs[2]
    assert outputs[3].startswith("OrderAck(order_number=") and "created" in outputs[3]
    assert "deleted" in outputs[4]
