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
    bad += [f"docs/architecture.md: §{n}" for n in re.findall(r"(?<!paper )§(\d+)(?!\.\d)", arch)
            if n not in sections]
    assert not bad, "references to no section of docs/method.md:\n" + "\n".join(bad)


# the folder this checkout sits in, as an absolute path: the repository must not name where it lives
OUTSIDE = re.compile(r"\.\./shared|METHOD\.md|/home/\w|shared/reference|" + re.escape(str(REPO.resolve().parent) + "/"))


def test_nothing_points_outside_the_repository():
    me = Path(__file__).resolve()
    bad = [f"{p.relative_to(REPO)}:{i}: {line.strip()[:120]}"
           for p in tracked() if p.resolve() != me
           for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
           if OUTSIDE.search(line)]
    assert not bad, "references to files outside the repository:\n" + "\n".join(bad)


README = REPO / "README.md"


def test_readme_keeps_its_two_commands():
    text = README.read_text(encoding="utf-8")
    assert "```bash\nbash scripts/demo.sh\n```" in text and "```bash\nbash scripts/test.sh\n```" in text
    assert len(text.splitlines()) <= 200


def results_rows() -> list[tuple[str, str, str]]:
    """(figure, page, command) of each row of the README's results table."""
    text = README.read_text(encoding="utf-8")
    table = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and (m := re.search(r"\]\(([^)]+)\)", cells[2])):
            rows.append((cells[1], m.group(1), cells[3]))
    return rows


def test_every_readme_figure_is_on_the_page_that_measures_it():
    rows, bad = results_rows(), []
    assert len(rows) >= 5
    for figure, page, command in rows:
        assert command, f"no command for {figure!r}"
        text = (REPO / page).read_text(encoding="utf-8")
        bad += [f"{n} ({page})" for n in re.findall(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", figure)
                if not re.search(r"(?<![\d.])" + re.escape(n) + r"(?![\d])", text)]
    assert not bad, "README figures not on their page: " + ", ".join(bad)


PENDING = {"docs/weak_labels_matrix.md"}  # written on the lead's branch (benchmarks/weak_labels_matrix.py)


def test_relative_links_in_the_docs_resolve():
    pages = [README, *sorted((REPO / "docs").glob("*.md"))]
    bad = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"", text):
            target = next(t for t in target if t)
            if re.match(r"(https?:|mailto:|#)", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists() and str(path.relative_to(REPO)) not in PENDING:
                bad.append(f"{page.relative_to(REPO)}: {target}")
    assert not bad, "links to nothing:\n" + "\n".join(bad)


def test_the_index_lists_every_page():
    index = (REPO / "docs" / "index.md").read_text(encoding="utf-8")
    missing = [p.name for p in (REPO / "docs").glob("*.md") if p.name != "index.md" and f"]({p.name})" not in index]
    assert not missing, f"docs/index.md lists no link to {missing}"


# Results in the package's docstrings, comments and config comments: accuracies and AUCs, times,
# speed-ups, rates. They belong on a benchmark page beside the command that measured them.
RESULT = re.compile(r"""(?ix)
    \b(?:AUC|accuracy)\b[^.;:()]{0,25}?(?<![\w.])\d?\.\d+     # AUC 0.97, accuracy of 0.95
  | (?<![\w.])0\.\d{3,}\b(?!\s*(?:µm|um|mm))                  # 0.984 (three decimals or more; not a µm/px)
  | \b(?:in|took|takes|take)\s+\d+(?:\.\d+)?\s*(?:s|ms|min|minutes?|seconds?|hours?)\b   # in 62 s
  | \b\d+(?:\.\d+)?\s*(?:s|ms|min)\s+(?:an?|per|instead\s+of)\b                       # 7.1 s an epoch
  | \b\d+(?:\.\d+)?\s*[x×]\s+(?:faster|slower|cheaper|quicker)\b                      # 1.45x faster
  | \b\d[\d,.]*\s*(?:steps/s|slides/h|slides\s+(?:per|an)\s+hour)\b                   # 1.2 steps/s
""")
ALLOWED = ("e.g. 0.001",)  # examples of a setting's values, not results


def comment_lines(path: Path):
    """(line number, text) of the comments and docstrings of a Python file, or a YAML file's comments."""
    import io
    import tokenize
    src = path.read_text(encoding="utf-8")
    if path.suffix == ".yaml":
        yield from ((i, line[line.index("#"):]) for i, line in enumerate(src.splitlines(), 1) if "#" in line)
        return
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
        elif tok.type == tokenize.STRING and tok.string.lstrip("rbuRBU").startswith(('"""', "'''")):
            yield from ((tok.start[0] + j, line) for j, line in enumerate(tok.string.splitlines()))


def results_in(text: str) -> list[str]:
    return [] if any(a in text for a in ALLOWED) else [m.group(0) for m in RESULT.finditer(text)]


def test_the_results_pattern():
    for text in ("held-out AUC 0.97", "test accuracy 0.984", "trains in 62 s", "1.45x faster steps",
                 "7.1 s an epoch", "1.2 steps/s of 8 slides", "0.982 / 0.974"):
        assert results_in(text), text
    for text in ("threshold 0.5", "0.499 µm/px", "probability >= 0.5", "default 8 MB", "eq 3", "N = 10",
                 "(e.g. 0.001 to 0.00005)", "s1 = 0.1", "lr 3e-3", "1/16 of the memory"):
        assert not results_in(text), text


def test_no_results_in_the_package_source():
    pkg = REPO / "zoomin"
    bad = [f"{p.relative_to(REPO)}:{i}: {found}"
           for p in sorted([*pkg.rglob("*.py"), *(pkg / "configs").glob("*.yaml")])
           for i, text in comment_lines(p) if (found := results_in(text))]
    assert not bad, ("results belong on a benchmark page (docs/), not in the package:\n" + "\n".join(bad))


def architecture_table() -> dict[str, set[str]]:
    """docs/architecture.md's module table: module file (``data/factory.py``) -> the zoomin modules it
    says that module imports (``data.factory``)."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## One line per module", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and (m := re.fullmatch(r"`([\w/]+\.py)`", cells[0])):
            out[m.group(1)] = set() if cells[2] == "—" else {s.strip() for s in cells[2].split(",")}
    return out


def test_architecture_lists_every_module_and_its_imports():
    from test_architecture import import_graph, modules

    graph, files = import_graph(), modules()
    pkg = REPO / "zoomin"
    actual = {files[m].relative_to(pkg).as_posix(): {t.removeprefix("zoomin.") for t in graph.successors(m)}
              for m in files}
    stated = architecture_table()
    assert sorted(stated) == sorted(actual), (
        f"modules not in docs/architecture.md: {sorted(set(actual) - set(stated))}; "
        f"listed but absent: {sorted(set(stated) - set(actual))}")
    wrong = {m: (sorted(stated[m]), sorted(actual[m])) for m in actual if stated[m] != actual[m]}
    assert not wrong, f"imports in docs/architecture.md (stated, actual): {wrong}"


def test_every_name_on_the_method_page_exists():
    """Each `module.function` of docs/method.md is in the package, each `section.field` in the config."""
    import importlib

    from zoomin.config import Config

    fields = {f"{s}.{name}" for s in ("model", "data", "train", "readout")
              for name in getattr(Config(), s).__dataclass_fields__}
    bad = []
    page = METHOD_PAGE.read_text(encoding="utf-8")
    for name in sorted(set(re.findall(r"`([a-z_0-9]+(?:\.[A-Za-z_]\w*)+)(?:\([^`]*\))?`", page))):
        if name in fields or name in ("module.name", "section.field"):  # the page's notation
            continue
        parts, obj = name.split("."), None
        for i in range(len(parts), 0, -1):
            try:
                obj, rest = importlib.import_module("zoomin." + ".".join(parts[:i])), parts[i:]
                break
            except ImportError:
                continue
        try:
            for r in rest if obj is not None else [None]:
                obj = getattr(obj, r)
        except (AttributeError, TypeError):
            bad.append(name)
    assert not bad, f"docs/method.md names what does not exist: {bad}"
