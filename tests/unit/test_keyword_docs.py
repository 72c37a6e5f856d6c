"""Every keyword is documented with an example, tagged, and none was renamed by accident."""

from pathlib import Path

import pytest
from robot.libdocpkg import LibraryDocumentation

SNAPSHOT = Path(__file__).with_name("keyword_names.txt")


@pytest.fixture(scope="module")
def libdoc():
    return LibraryDocumentation("MessagingLibrary")


def test_library_and_init_are_documented(libdoc):
    assert len(libdoc.doc) > 500
    assert libdoc.inits and libdoc.inits[0].doc


def test_every_keyword_has_documentation_an_example_and_tags(libdoc):
    problems = []
    for kw in libdoc.keywords:
        if len(kw.doc.strip()) < 40:
            problems.append(f"{kw.name}: no real documentation")
        if "\n| " not in "\n" + kw.doc:
            problems.append(f"{kw.name}: no example row ('| Keyword    args')")
        if not kw.tags:
            problems.append(f"{kw.name}: no tags")
    assert not problems, "\n".join(problems)


def test_keyword_names_match_the_snapshot(libdoc):
    """A rename breaks users' suites: update keyword_names.txt only on purpose."""
    names = sorted(kw.name for kw in libdoc.keywords)
    expected = SNAPSHOT.read_text().split("\n")
    expected = [line for line in expected if line.strip()]
    assert names == expected, (
        "Keyword names changed. If intended, regenerate tests/unit/keyword_names.txt. "
        f"Added: {sorted(set(names) - set(expected))}; removed: {sorted(set(expected) - set(names))}"
    )
