"""An async flow: the same DataFrame through the dataset flow, its rows read back as objects.

Same set-up as ``catalog_sync.py``. ``generate_dataset`` takes the DataFrame itself: its rows
are written once to the output (the flow run's parameters stay a path), and the run's summary
reads the manifest lazily, one ``ManifestLine`` at a time.
"""

import asyncio

import pandas as pd
from prefect import flow

from prefect_seedream import generate_dataset


@flow
async def render_catalog(products: pd.DataFrame, output: str = "output/catalog-async") -> list[str]:
    rows = products.assign(id=products["sku"], prompt="A product photo of " + products["name"] + ", studio light")
    state = await generate_dataset(rows[["id", "prompt"]], output=output, max_concurrency=4, return_state=True)
    summary = await state.aresult(raise_on_failure=False)
    print(state.message)
    paths = []
    for line in summary.lines():
        for image in line.images:
            width, height = image.open().size  # a PIL image, from a folder or s3://
            paths.append(f"{image.uri} ({width}x{height})")
    return paths


if __name__ == "__main__":
    catalog = pd.DataFrame({"sku": ["mug-01", "lamp-02", "chair-03"],
                            "name": ["a blue ceramic mug", "a brass desk lamp", "an oak chair"]})
    for path in asyncio.run(render_catalog(catalog)):
        print(path)
