"""Every document the code, tests, tools, pipelines and README cite exists in the repository."""

from __future__ import annotations

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
CITING = [*REPO.glob("keras_pose/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("tools/*.py"),
          *REPO.glob("pipelines/*.toml"), REPO / "README.md", *REPO.glob("docs/*.md")]
MARKDOWN = re.compile(r"[\w./-]*\w\.md\b")


def _cited():
    for path in CITING:
        if path == pathlib.Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for name in MARKDOWN.findall(line):
                yield f"{path.relative_to(REPO)}:{number}", name.lstrip("./")


def test_cited_documents_exist():
    documents = {p.name for p in REPO.glob("*.md")} | {p.name for p in REPO.glob("docs/*.md")}
    cited = list(_cited())
    assert any(name == "docs/models.md" for _, name in cited)
    missing = [(where, name) for where, name in cited
               if not ((REPO / name).is_file() if "/" in name else name in documents)]
    assert not missing, f"cited documents that are not in the repository: {missing}"


def test_docs_stand_alone():
    """The design notes are the project's own: no paths outside the repository."""
    outside = re.compile(r"\.\./|\bshared/")
    for path in REPO.glob("docs/*.md"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            assert not outside.search(line), f"{path.name}:{number}: {line}"
