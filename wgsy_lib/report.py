"""Shareable HTML reports from executed notebooks, without patient photographs unless requested.

Executed notebooks are shared as reports, and a report must not carry a patient's face by
accident. `export_html` therefore keeps an image output only when the library marked it as a plot
(`wgsy_lib.plots.show_figure` / `show_image_file` write that mark into the output metadata) and
removes every other embedded image: unmarked PNG/JPEG/SVG outputs, HTML outputs with inline
`data:image` sources, and markdown attachments. Photos displayed on purpose (a notebook run with
`show_photos = True`) are marked as photos and are kept only with `include_photos=True`.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import nbformat

from .errors import ConfigError
from .log import log_written
from .plots import OUTPUT_METADATA_KEY, PHOTO_KIND, PLOT_KIND

logger = logging.getLogger(__name__)

_IMAGE_MIME_PREFIX = "image/"
_INLINE_IMAGE = re.compile(r"data:image/", re.IGNORECASE)
REMOVED_NOTE = ("[image removed from this report: only plots are exported; photographs are kept only with "
                "`wgsy report --include-photos` on a notebook run with show_photos = True]\n")


def export_html(notebook_path: str | Path, output_path: str | Path | None = None, *, exclude_code: bool = False,
                include_photos: bool = False) -> Path:
    """Export an executed notebook to HTML (beside it by default) and return the HTML path.

    `exclude_code` hides code cells and prompts, leaving narrative, tables and figures.
    """
    from nbconvert import HTMLExporter

    notebook_path = Path(notebook_path)
    if not notebook_path.is_file():
        raise ConfigError(f"notebook {notebook_path} not found; pass the executed notebook a run wrote")
    try:
        notebook = nbformat.read(notebook_path, as_version=4)
    except Exception as error:  # nbformat raises several unrelated types for unreadable files
        raise ConfigError(f"{notebook_path} is not a readable Jupyter notebook ({error})") from None

    cleaned, removed = remove_photos(notebook, include_photos=include_photos)
    if removed:
        logger.info("removed %d unmarked or photo image output(s) from the report of %s", removed, notebook_path.name)

    exporter = HTMLExporter(exclude_input=exclude_code, exclude_input_prompt=exclude_code,
                            exclude_output_prompt=exclude_code)
    body, _resources = exporter.from_notebook_node(cleaned)
    output_path = Path(output_path) if output_path is not None else notebook_path.with_suffix(".html")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(body, encoding="utf-8")
    log_written(output_path, "HTML report" + (" without code" if exclude_code else ""), log=logger)
    return output_path


def remove_photos(notebook: nbformat.NotebookNode, *, include_photos: bool = False) -> tuple[nbformat.NotebookNode, int]:
    """Return a copy of `notebook` with every image that is not a marked plot removed, and the count removed.

    With `include_photos`, images marked as photos are kept too; unmarked images are always removed.
    """
    cleaned = copy.deepcopy(notebook)
    removed = 0
    keep = {PLOT_KIND, PHOTO_KIND} if include_photos else {PLOT_KIND}
    for cell in cleaned.cells:
        if cell.get("attachments"):
            removed += len(cell["attachments"])
            cell["attachments"] = {}
        if cell.cell_type != "code":
            continue
        new_outputs = []
        for output in cell.get("outputs", []):
            data = output.get("data")
            if not data or not _has_image(data):
                new_outputs.append(output)
                continue
            kind = (output.get("metadata", {}).get(OUTPUT_METADATA_KEY) or {}).get("kind")
            if kind in keep:
                new_outputs.append(output)
                continue
            removed += 1
            new_outputs.append(nbformat.v4.new_output("stream", name="stdout", text=REMOVED_NOTE))
        cell["outputs"] = new_outputs
    return cleaned, removed


def image_outputs(notebook: nbformat.NotebookNode) -> list[tuple[int, str | None]]:
    """List (cell index, mark) for every image output in `notebook`; the mark is plot, photo or None."""
    found = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data")
            if data and _has_image(data):
                found.append((index, (output.get("metadata", {}).get(OUTPUT_METADATA_KEY) or {}).get("kind")))
    return found


def _has_image(data: dict) -> bool:
    if any(mime.startswith(_IMAGE_MIME_PREFIX) for mime in data):
        return True
    html = data.get("text/html", "")
    html = "".join(html) if isinstance(html, list) else html
    return bool(_INLINE_IMAGE.search(html))
