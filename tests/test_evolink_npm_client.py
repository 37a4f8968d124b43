"""Evolink's own published client (npm ``@evolinkai/evolink-media``) against the simulator.

The simulator re-implements the API from documents; this check runs the vendor's client code
(its ``services/api-client.js`` for submits and polls, ``tools/check-task.js`` to read the
answers) against it with each model's documented example request, through
``tests/evolink_client_check.mjs``. Node.js comes from ``.ci/install-node.sh`` (tried here when
``node`` is missing; the test is skipped only if that fails); the npm package is installed once
into a cache directory (``$EVOLINK_MEDIA_ROOT``, else ``~/.cache/prefect-seedream/...``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from prefect_seedream.simulator import SimulatorConfig, running_simulator
from tests.evolink_examples import DOCUMENTED_EXAMPLES, LAYERIZE_MODELS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CHECK_SCRIPT = REPO / "tests" / "evolink_client_check.mjs"
INSTALL_NODE = REPO / ".ci" / "install-node.sh"
#: The version whose ``dist/core/src`` layout the check script imports (read December 2026).
PACKAGE = "@evolinkai/evolink-media@1.2.1"
PREVIEW = "doubao-seedream-5.1-preview"
#: Credits per image (``billing.CREDITS_PER_IMAGE``, seed-page list: 4.5 at 2.0).
PRICES = {
    "doubao-seedream-4.0": 1.5,
    "doubao-seedream-4.5": 2.0,
    "doubao-seedream-5.0-lite": 2.2,
    "doubao-seedream-5.0-pro": 6.2,
    "doubao-seedream-5.0-flash": 1.25,
    "doubao-seedream-5.0-pro-layerize": 6.2,
    "doubao-seedream-5.0-flash-layerize": 1.25,
    PREVIEW: 6.2,
}


def node_and_npm() -> tuple[str, str]:
    """Paths of ``node`` and ``npm``, installing them with ``.ci/install-node.sh`` if needed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm
    done = subprocess.run(
        ["bash", str(INSTALL_NODE)], capture_output=True, text=True, timeout=900, check=False
    )
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        pytest.skip(f"node/npm could not be installed by {INSTALL_NODE.name}: {done.stderr[-500:]}")
    return node, npm


def package_root(npm: str) -> Path:
    """A directory whose ``node_modules`` holds :data:`PACKAGE` (installed once, then cached)."""
    configured = os.environ.get("EVOLINK_MEDIA_ROOT")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = Path(configured) if configured else cache / "prefect-seedream" / "evolink-media-1.2.1"
    marker = root / "node_modules" / "@evolinkai" / "evolink-media" / "package.json"
    if marker.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="evolink-media-", dir=root.parent))
    command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(staging), PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"npm could not install {PACKAGE}: {(done.stderr or done.stdout)[-800:]}")
    if not marker.exists():
        staging.rename(root)
    else:  # another run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return root


def run_check(node: str, root: Path, base_url: str, examples: Path) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "EVOLINK_MEDIA_ROOT": str(root),
        "SIM_BASE_URL": base_url,
        "EVOLINK_API_KEY": "sk-test-npm-client",
    }
    done = subprocess.run(
        [node, str(CHECK_SCRIPT), str(examples)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_evolink_npm_client_runs_every_documented_example(tmp_path: Path) -> None:
    node, npm = node_and_npm()
    root = package_root(npm)
    examples = {**DOCUMENTED_EXAMPLES}
    examples[PREVIEW] = {**DOCUMENTED_EXAMPLES["doubao-seedream-5.0-pro"], "model": PREVIEW}
    examples_file = tmp_path / "examples.json"
    examples_file.write_text(json.dumps(examples), encoding="utf-8")
    config = SimulatorConfig(
        latency_seconds=0.2, jitter_seconds=0.0, extra_models={PREVIEW: "doubao-seedream-5.0-pro"}
    )
    with running_simulator(config) as sim:
        outcomes = run_check(node, root, sim.base_url, examples_file)
        assert sim.stats()["tasks_created"] == len(examples)
    assert [outcome["model"] for outcome in outcomes] == list(examples)
    for outcome in outcomes:
        model = outcome["model"]
        assert outcome["ok"], outcome
        assert outcome["client_version"] == "1.2.1"
        assert (outcome["submitted_status"], outcome["status"]) == ("pending", "completed")
        assert outcome["answer_model"] == model
        assert [item["image_url"] for item in outcome["result_data"]] == outcome["results"]
        reserved_images = 4 if model in LAYERIZE_MODELS else 1
        assert outcome["credits_reserved"] == pytest.approx(PRICES[model] * reserved_images)
        if model in LAYERIZE_MODELS:
            assert len(outcome["results"]) in (3, 4)
            assert outcome["results"][0].endswith(".jpg")
            assert all(url.endswith(".png") for url in outcome["results"][1:])
