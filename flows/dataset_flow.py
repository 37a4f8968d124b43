"""Entry point of the dataset flow for deployments and for running it as a script.

``deployments/prefect.yaml`` points at ``flows/dataset_flow.py:generate_dataset``; the flow
itself lives in the plugin (``prefect_seedream.flows``) so that ``pip install
prefect-seedream`` users get it too.

Run it directly (sample dataset, bundled simulator when ``SEEDREAM_API_KEY`` is unset: use
``prefect-seedream run`` for that) or deploy it::

    prefect --no-prompt deploy --prefect-file deployments/prefect.yaml --name generate-dataset
"""


import asyncio
import sys

from prefect_seedream.flows import generate_dataset, recover_dataset

__all__ = ["generate_dataset", "recover_dataset"]

if __name__ == "__main__":
    dataset = sys.argv[1] if len(sys.argv) > 1 else "examples/prompts.csv"
    output = sys.argv[2] if len(sys.argv) > 2 else "output"
    state = asyncio.run(generate_dataset(dataset, output, return_state=True))
    print(state.message)
