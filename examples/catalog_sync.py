"""A sync flow: a pandas DataFrame of products in, the paths of their images out.

Run it against the simulator (``prefect-seedream simulator --port 8787`` in another terminal,
then ``export SEEDREAM_API_KEY=sk-local SEEDREAM_BASE_URL=http://127.0.0.1:8787``) or against
the real API (your key, no base URL). Running it again pays for nothing: every row is stored.
"""

import pandas as pd
from prefect import flow

from prefect_seedream import generate_many


@flow
def render_catalog(products: pd.DataFrame, output: str = "output/catalog") -> list[str]:
    # One request per row: `id` names the files (and makes a re-run resume), `prompt` is required.
    rows = products.assign(id=products["sku"], prompt="A product photo of " + products["name"] + ", studio light")
    results = generate_many(rows[["id", "prompt"]], output, max_concurrency=4)
    for result in results:
        if not result.ok:
            print(f"{result.row_id}: {result.status} ({result.error.code}: {result.error.message})")
    return [image.uri for result in results if result.ok for image in result.images]


if __name__ == "__main__":
    catalog = pd.DataFrame({"sku": ["mug-01", "lamp-02", "chair-03"],
                            "name": ["a blue ceramic mug", "a brass desk lamp", "an oak chair"]})
    for path in render_catalog(catalog):
        print(path)
