"""Files the project ships beside its code: ``config.toml`` and the SQL migrations.

They live at the top of the repository (``config.toml``, ``schemas/migrations/…``), where a
checkout and an editable install read them. A wheel carries copies inside the ``actors``
package (``actors/_shipped/…``, put there by ``setup.py``'s build step), so an installed
package — a Docker image, ``pip install exness-actors`` — finds them without the sources.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["shipped_path", "SOURCE_ROOT", "PACKAGED_ROOT"]

#: the repository root, when running from a checkout or an editable install
SOURCE_ROOT = Path(__file__).resolve().parent.parent
#: the copies a wheel carries
PACKAGED_ROOT = Path(__file__).resolve().parent / "_shipped"

#: what the build step copies into PACKAGED_ROOT (paths relative to the repository root)
SHIPPED = ("config.toml", "schemas/migrations")


def shipped_path(relative: str) -> Path:
    """The repository's copy of ``relative`` when it exists, else the wheel's."""
    source = SOURCE_ROOT / relative
    if source.exists() and (SOURCE_ROOT / "pyproject.toml").exists():
        return source
    return PACKAGED_ROOT / relative
