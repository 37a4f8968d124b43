"""Ready-made pipelines built on the dataset flow, deployable from the installed package.

Each module holds a flow meant to run on a schedule or a trigger; its entrypoint is a module
path (``prefect_seedream.pipelines.content:daily_content``), so a worker needs the package
installed and nothing else.

Examples:
    >>> from prefect_seedream.pipelines.content import build_prompts
    >>> build_prompts("A {style} {subject}", ["fox"], ["pencil"])[0]["prompt"]
    'A pencil fox'
"""
