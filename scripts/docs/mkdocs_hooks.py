"""MkDocs hooks (named in mkdocs.yml): add the generated reference pages to the site at build time.

`reference/recipe.md` comes from the recipe schema and `reference/cli.md` from the Typer app, so neither is
committed and neither can drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_cli_reference import cli_reference_markdown  # noqa: E402
from gen_recipe_reference import recipe_reference_markdown  # noqa: E402

GENERATED = {
    "reference/recipe.md": recipe_reference_markdown,
    "reference/cli.md": cli_reference_markdown,
}


def on_files(files: Files, config: Any) -> Files:
    for uri, make in GENERATED.items():
        if files.get_file_from_path(uri) is not None:
            raise ValueError(f"docs/{uri} is generated at build time; delete the committed copy")
        files.append(File.generated(config, uri, content=make()))
    return files
