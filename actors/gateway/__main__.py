"""``python -m actors.gateway --export-openapi [PATH]``: write the OpenAPI document (default
``schemas/openapi.json``); ``--check-openapi [PATH]`` exits 1 when the file is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from actors.gateway._openapi import OPENAPI_PATH, export_openapi, openapi_text


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors.gateway", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--export-openapi", nargs="?", const=str(OPENAPI_PATH), metavar="PATH",
                        help=f"write the OpenAPI document (default {OPENAPI_PATH})")
    action.add_argument("--check-openapi", nargs="?", const=str(OPENAPI_PATH), metavar="PATH",
                        help="fail when PATH differs from the document the code produces")
    args = parser.parse_args(argv)
    if args.export_openapi:
        path = export_openapi(args.export_openapi)
        print(f"wrote {path}")
        return 0
    path = Path(args.check_openapi)
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current != openapi_text():
        print(f"{path} is stale: run python -m actors.gateway --export-openapi {path}", file=sys.stderr)
        return 1
    print(f"{path} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
