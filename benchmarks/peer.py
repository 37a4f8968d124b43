"""What a user would write instead of the plugin: plain asyncio + httpx, the same HTTP work.

For each row of a CSV dataset (columns ``id``, ``prompt``), with at most C rows in flight
(an ``asyncio.Semaphore``) and one shared ``httpx.AsyncClient``:

1. ``POST /v1/images/generations`` (model ``doubao-seedream-4.5``, size ``2K``, ``n`` 1);
2. the first ``GET /v1/tasks/{id}`` after the submit answer's ``task_info.estimated_time``
   seconds, then one every P seconds until the task is terminal;
3. download each result URL and write it as ``<out>/<row id>-<i>.png`` (i from 1);
4. append one JSON line per row to ``<out>/manifest.jsonl``.

No retries (the benchmarks inject no faults); a row that fails is recorded as failed with
the error and the others go on. Exit code 0 when every row succeeded.

Usage::

    .venv/bin/python benchmarks/peer.py dataset.csv --output out --base-url http://127.0.0.1:8787 \\
        --api-key sk-anything --concurrency 50 [--poll-interval 3]

It imports only httpx and the standard library: no Prefect, nothing of the plugin.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from pathlib import Path
from typing import Any

import httpx

MODEL = "doubao-seedream-4.5"
TERMINAL = {"completed", "failed", "cancelled"}


def safe_name(row_id: str) -> str:
    """A file-name stem that cannot leave the output folder."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in row_id).lstrip(".") or "row"


async def generate_row(
    client: httpx.AsyncClient,
    semaphore: asyncio.Semaphore,
    row_id: str,
    prompt: str,
    output: Path,
    poll_interval: float,
) -> dict[str, Any]:
    async with semaphore:
        started = time.time()
        line: dict[str, Any] = {"id": row_id, "prompt": prompt, "task_id": None, "images": []}
        try:
            response = await client.post(
                "/v1/images/generations",
                json={"model": MODEL, "prompt": prompt, "size": "2K", "n": 1},
            )
            response.raise_for_status()
            task = response.json()
            line["task_id"] = task["id"]
            estimated = (task.get("task_info") or {}).get("estimated_time")
            await asyncio.sleep(estimated if estimated is not None else poll_interval)
            polls = 0
            while True:
                response = await client.get(f"/v1/tasks/{task['id']}")
                response.raise_for_status()
                task = response.json()
                polls += 1
                if task.get("status") in TERMINAL:
                    break
                await asyncio.sleep(poll_interval)
            line["polls"] = polls
            if task["status"] != "completed":
                error = task.get("error") or {}
                line["status"] = "failed"
                line["error"] = {"code": error.get("code", task["status"]), "message": error}
            else:
                for index, url in enumerate(task.get("results") or [], start=1):
                    response = await client.get(url)
                    response.raise_for_status()
                    path = output / f"{safe_name(row_id)}-{index}.png"
                    path.write_bytes(response.content)
                    line["images"].append({"path": str(path), "bytes": len(response.content)})
                line["status"] = "succeeded"
                line["error"] = None
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            line["status"] = "failed"
            line["error"] = {"code": type(exc).__name__, "message": str(exc)}
        line["duration_seconds"] = round(time.time() - started, 3)
        return line


async def run(args: argparse.Namespace) -> tuple[int, int]:
    with args.dataset.open(newline="", encoding="utf-8") as handle:
        rows = [(row["id"], row["prompt"]) for row in csv.DictReader(handle)]
    args.output.mkdir(parents=True, exist_ok=True)
    semaphore = asyncio.Semaphore(args.concurrency)
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    succeeded = 0
    async with httpx.AsyncClient(
        base_url=args.base_url,
        headers={"Authorization": f"Bearer {args.api_key}"},
        timeout=httpx.Timeout(60.0),
        limits=limits,
    ) as client:
        with (args.output / "manifest.jsonl").open("a", encoding="utf-8") as manifest:

            async def one(row_id: str, prompt: str) -> None:
                nonlocal succeeded
                line = await generate_row(
                    client, semaphore, row_id, prompt, args.output, args.poll_interval
                )
                succeeded += line["status"] == "succeeded"
                manifest.write(json.dumps(line) + "\n")

            await asyncio.gather(*(one(row_id, prompt) for row_id, prompt in rows))
    return len(rows), succeeded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="CSV with columns id, prompt")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--concurrency", type=int, required=True, help="rows in flight")
    parser.add_argument(
        "--poll-interval", type=float, default=3.0, help="seconds between polls (default 3)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    total, succeeded = asyncio.run(run(args))
    wall = time.monotonic() - started
    print(f"Rows: {total}  succeeded: {succeeded}  failed: {total - succeeded}")
    print(f"Wall: {wall:.2f} s ({total / wall if wall else 0:.2f} rows/s)")
    return 0 if succeeded == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
