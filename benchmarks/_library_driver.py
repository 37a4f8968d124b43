"""One measured contender of ``library.py``, run as its own process (so its CPU and memory are
its own): the dataset flow on a file, the dataset flow on rows held in memory, ``generate_many``
inside a flow, or ``generate_images.map`` inside a flow.

    python benchmarks/_library_driver.py MODE DATASET OUTPUT --concurrency C

MODE: ``dataset-file``, ``dataset-memory``, ``many``, ``map``. ``SEEDREAM_API_KEY`` /
``SEEDREAM_BASE_URL`` point at the simulator, ``PREFECT_API_URL`` at the server. Prints one
JSON line: rows, succeeded, seconds from start to the end of the run, the flow run id.
"""

from __future__ import annotations

import argparse
import csv
import json
import time

STARTED = time.monotonic()

from prefect import flow  # noqa: E402

from prefect_seedream import GenerationRequest, generate_dataset, generate_images, generate_many  # noqa: E402


def read_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["dataset-file", "dataset-memory", "many", "map"])
    parser.add_argument("dataset")
    parser.add_argument("output")
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    fast = {"poll_interval": 1.0, "retry_delay_seconds": 1.0}

    if args.mode in ("dataset-file", "dataset-memory"):
        dataset = args.dataset if args.mode == "dataset-file" else read_rows(args.dataset)
        state = generate_dataset(dataset, output=args.output, max_concurrency=args.concurrency,
                                 return_state=True, **fast)
        summary = state.result(raise_on_failure=False)
        succeeded, rows, run_id = summary.succeeded, summary.rows, state.state_details.flow_run_id
    else:
        requests = [GenerationRequest(prompt=row["prompt"]) for row in read_rows(args.dataset)]

        @flow(name=f"bench-{args.mode}")
        def composed() -> list[bool]:
            if args.mode == "many":
                results = generate_many(requests, args.output, max_concurrency=args.concurrency, **fast)
            else:  # what .map costs: one task run (and one HTTP client) per request
                results = [f.result() for f in generate_images.map(
                    requests, args.output, label=[f"r{i}" for i in range(len(requests))],
                    poll_interval=1.0,
                )]
            return [result.ok for result in results]

        state = composed(return_state=True)
        oks = state.result(raise_on_failure=False)
        succeeded, rows, run_id = sum(oks), len(oks), state.state_details.flow_run_id
    print(json.dumps({"rows": rows, "succeeded": succeeded, "seconds": round(time.monotonic() - STARTED, 2),
                      "flow_run_id": str(run_id)}))


if __name__ == "__main__":
    main()
