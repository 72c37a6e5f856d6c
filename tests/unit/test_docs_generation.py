"""``apex-docs`` writes libdoc HTML of the library and of every resource file, and insists on documentation."""

from pathlib import Path

import pytest
from MessagingLibrary.docs import generate, main
from robot.libdocpkg import LibraryDocumentation

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def test_apex_docs_writes_the_library_and_every_resource_with_each_keyword(tmp_path):
    assert main(["--out", str(tmp_path / "docs"), "--resources", str(RESOURCES)]) == 0
    sources = sorted(RESOURCES.glob("*.resource"))
    assert {p.name for p in (tmp_path / "docs").iterdir()} == {"MessagingLibrary.html"} | {
        f"{s.stem}.html" for s in sources
    }
    for source in sources:
        html = (tmp_path / "docs" / f"{source.stem}.html").read_text(encoding="utf-8")
        for kw in LibraryDocumentation(str(source)).keywords:
            assert f'"{kw.name}"' in html, f"{kw.name} of {source.name} is missing from its documentation"
    assert "Check Target" in (tmp_path / "docs" / "MessagingLibrary.html").read_text(encoding="utf-8")


def test_every_resource_keyword_has_documentation():
    missing = [
        f"{source.name}: {kw.name}"
        for source in sorted(RESOURCES.glob("*.resource"))
        for kw in LibraryDocumentation(str(source)).keywords
        if not kw.doc.strip()
    ]
    assert not missing, "Resource keywords without [Documentation]: " + "; ".join(missing)


def test_a_resource_keyword_without_documentation_fails_the_command(tmp_path):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "bare.resource").write_text("*** Keywords ***\nUndocumented\n    No Operation\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bare.resource: Undocumented"):
        generate(tmp_path / "docs", resources)
    assert main(["--out", str(tmp_path / "docs"), "--resources", str(resources)]) == 1


def test_the_library_introduction_covers_every_part():
    doc = LibraryDocumentation("MessagingLibrary").doc
    for section in (
        "= Vocabulary =", "= Target and test users =", "= Connections and sending =", "= Checks =",
        "= Offline queue =", "= Load engine =", "= Fault proxy =", "= Resource monitor =", "= Reporting =",
        "= The mock =",
    ):
        assert section in doc, section
    for term in ("metrics.jsonl", "history-<suite>.jsonl", "load/<run>.json", "``connection``", "``user``", "``pusher``"):
        assert term in doc, term
