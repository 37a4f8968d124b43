"""What a run does when the account refuses it: out of credits (402) and a wrong key (401).

Runs ``prefect-seedream run`` (its own temporary Prefect server) on N rows at concurrency C
against a simulator process whose account can pay for a part of them (``--account-credits``),
then against one that accepts another key only (``--api-key``), and prints how many
submissions got the refusal (the target: at most C), what was created and charged, the exit
code, and the terminal's last lines.

    .venv/bin/python benchmarks/account_stop.py --rows 200 --concurrency 8 --credits 80
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from _proc import simulator_cli_command, simulator_process, write_dataset
from compare import clean_env, executable


def scenario(name: str, sim_extra: list[str], key: str, args: argparse.Namespace, workdir: Path) -> None:
    dataset = workdir / "rows.csv"
    write_dataset(dataset, args.rows, prefix=name)
    command = [*simulator_cli_command(0.5, 0.0, 0, {}), *sim_extra]
    (workdir / name).mkdir()
    with simulator_process(command, workdir / name) as sim:
        env = clean_env(SEEDREAM_API_KEY=key, SEEDREAM_BASE_URL=sim.base_url,
                        PREFECT_HOME=str(workdir / name / "prefect-home"))
        started = time.monotonic()
        done = subprocess.run(
            [executable("prefect-seedream"), "run", str(dataset), "--output", str(workdir / name / "out"),
             "--max-concurrency", str(args.concurrency)],
            env=env, capture_output=True, text=True, timeout=900,
        )
        wall = time.monotonic() - started
        stats = sim.stats()
    refused = stats["quota_refusals"] if name == "out-of-credits" else stats["unauthorized_requests"]
    print(f"== {name}: {args.rows} rows, C={args.concurrency}")
    print(f"   submissions refused (402/401): {refused} (target: at most {args.concurrency})")
    print(f"   tasks created: {stats['tasks_created']}, credits charged: {stats['credits_charged']:g}, "
          f"exit code {done.returncode}, {wall:.1f} s")
    print("   terminal, last lines:")
    for line in [ln for ln in done.stdout.splitlines() if ln.strip()][-12:]:
        print(f"   | {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--credits", type=float, default=80.0, help="what the account can pay")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="seedream-account-stop-"))
    scenario("out-of-credits", ["--account-credits", str(args.credits)], "sk-bench", args, workdir)
    scenario("wrong-key", ["--api-key", "sk-the-right-key"], "sk-a-wrong-key", args, workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
