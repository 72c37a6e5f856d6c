"""``apex-docs``: libdoc HTML of MessagingLibrary and of every business-keyword resource file.

    apex-docs                      # results/docs/MessagingLibrary.html, results/docs/<resource>.html
    apex-docs --out /tmp/docs      # somewhere else
    python -m MessagingLibrary.docs --resources path/to/resources

Fails (exit 1), naming them, when a resource keyword has no ``[Documentation]``: the
business keywords are the suites' vocabulary and their documentation is part of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robot.libdocpkg import LibraryDocumentation

LIBRARY = "MessagingLibrary"


def default_resources() -> Path:
    """``./resources`` when run from the repository, else the one next to this package's source."""
    here = Path.cwd() / "resources"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "resources"


def generate(out: Path, resources: Path) -> list[Path]:
    """Write the library's and each ``*.resource``'s documentation into ``out``; return the files.

    Raises ``ValueError`` naming every resource keyword without documentation (after writing).
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    library = LibraryDocumentation(LIBRARY)
    library.save(str(out / f"{LIBRARY}.html"), "HTML")
    written.append(out / f"{LIBRARY}.html")
    undocumented = []
    files = sorted(resources.glob("*.resource"))
    if not files:
        raise ValueError(f"No *.resource file in {resources}.")
    for source in files:
        doc = LibraryDocumentation(str(source))
        undocumented += [f"{source.name}: {kw.name}" for kw in doc.keywords if not kw.doc.strip()]
        target = out / f"{source.stem}.html"
        doc.save(str(target), "HTML")
        written.append(target)
    if undocumented:
        raise ValueError("Resource keywords without [Documentation]: " + "; ".join(undocumented))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apex-docs", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/docs"), help="output folder (default: results/docs)")
    parser.add_argument(
        "--resources", type=Path, default=None, help="folder of *.resource files (default: ./resources)"
    )
    args = parser.parse_args(argv)
    try:
        written = generate(args.out, args.resources or default_resources())
    except ValueError as error:
        print(f"apex-docs: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
