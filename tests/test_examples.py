"""The examples of docs/own-flows.md run as a user runs them (issue 15).

Each example is a script in ``examples/``; docs/own-flows.md (linked from the README) shows it
verbatim (checked here), and it is executed as a subprocess against the simulator and a real
Prefect API.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator

pytestmark = pytest.mark.usefixtures("prefect_api")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("catalog_sync.py", "catalog_async.py", "image_to_image.py")
#: The page that shows the examples (it was the README's "Using it from your own flows").
EXAMPLES_PAGE = ROOT / "docs" / "own-flows.md"


@pytest.fixture(scope="module")
def fetching_simulator() -> Iterator[RunningSimulator]:
    """The simulator as `prefect-seedream simulator` runs it: it downloads reference images."""
    with running_simulator(SimulatorConfig(latency_seconds=0.3, jitter_seconds=0.0, fetch_reference_images=True)) as sim:
        yield sim


def shown_examples() -> dict[str, str]:
    """The docs page's code blocks that start with `# examples/<name>.py`, by name."""
    text = EXAMPLES_PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n# examples/([\w.]+)\n(.*?)```", text, flags=re.DOTALL)
    return {name: body for name, body in blocks}


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_docs_show_the_example_as_it_is(name: str) -> None:
    shown = shown_examples()
    assert name in shown, f"{EXAMPLES_PAGE.relative_to(ROOT)} does not show examples/{name}"
    assert shown[name] == (ROOT / "examples" / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_example_runs(name: str, fetching_simulator: RunningSimulator, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "SEEDREAM_API_KEY": "sk-local",
        "SEEDREAM_BASE_URL": fetching_simulator.base_url,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    paths = re.findall(r"(/\S+\.png)", done.stdout)
    assert paths, done.stdout
    for path in paths:
        with Image.open(path) as image:
            image.load()  # a real image, where the example said
    if name == "image_to_image.py":  # the reference went through the store to the API
        assert fetching_simulator.stats()["reference_fetches"] >= 1
        with Image.open(paths[0]) as image:
            left = image.convert("RGB").getpixel((image.width // 4, image.height // 2))
        assert left == (40, 90, 160), left
