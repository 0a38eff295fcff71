"""The docs stay true to the repository (issue #33): every "method §N" names a section of
docs/method.md, nothing points at a file outside the repository, docs/architecture.md lists the
package's modules and their imports as they are, and results (accuracy, times, speed-ups) are
stated on the benchmark pages, not in the package's docstrings, comments or configs."""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHOD_PAGE = REPO / "docs" / "method.md"
TEXT = (".py", ".md", ".yaml", ".yml", ".ipynb", ".toml", ".sh", ".cfg", ".txt", ".csv", ".html")


def tracked() -> list[Path]:
    """The repository's text files (git's view: tracked plus untracked, not ignored)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [REPO / f for f in out if f.endswith(TEXT) and (REPO / f).is_file()]


def method_sections() -> set[str]:
    """Section numbers of docs/method.md's headings: "## 10. Title" -> "10", "### 10.4 Title" -> "10.4"."""
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", METHOD_PAGE.read_text(encoding="utf-8"), re.M)
    return set(heads)


REF = re.compile(r"method §(\d+(?:\.\d+)?)((?:\s*(?:,|-|–|and)\s*§?\d+(?:\.\d+)?)*)")


def section_refs(text: str) -> list[str]:
    """Every section number a "method §N" reference names (also "method §3-4", "method §2, §5")."""
    out = []
    for m in REF.finditer(text):
        out.append(m.group(1))
        out += re.findall(r"\d+(?:\.\d+)?", m.group(2))
    return [n.rstrip(".") for n in out]


def test_section_refs_are_parsed():
    assert section_refs("see method §3-4 and (method §2, §5, §13). Also method §10.4.") == \
        ["3", "4", "2", "5", "13", "10.4"]


def test_method_page_has_numbered_sections():
    assert {"1", "2", "4", "6", "10", "10.4", "11"} <= method_sections()


def test_every_method_reference_resolves():
    sections, bad = method_sections(), []
    for p in tracked():
        for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            bad += [f"{p.relative_to(REPO)}:{i}: method §{n}" for n in section_refs(line) if n not in sections]
    arch = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")  # its tables say "§N" for method §N
    bad += [f"docs/architecture.md: §{n}" for n in re.findall(r"(?<!paper )§(\d+)(?!\.\d)", arch) if n not in sections]
    assert not bad, "references to no section of docs/method.md:\n" + "\n".join(bad)


OUTSIDE = re.compile(r"\.\./shared|METHOD\.md|(?<![\w.])/work/|/home/\w|shared/reference")


def test_nothing_points_outside_the_repository():
    me = Path(__file__).resolve()
    bad = [f"{p.relative_to(REPO)}:{i}: {line.strip()[:120]}"
           for p in tracked() if p.resolve() != me
           for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
           if OUTSIDE.search(line)]
    assert not bad, "references to files outside the repository:\n" + "\n".join(bad)
