"""The claims table: every claim C1..C13 with its statement, its properties and whether they pass.

One source of truth for each entry: a claim's statement is the first sentence of its module's docstring
(theory/claims/cNN_*.py, without the "CNN:" label), and each property is a test function of
tests/claims/test_cNN_*.py, summarised by the first sentence of its docstring. Outcomes come from a
pytest JUnit XML report (`run_claim_tests` writes one). Files are read as source (`ast`), never
imported, so a claim whose module is missing or broken is listed as such instead of stopping the table.

Renderers: `to_text` (the console), `to_markdown` and `to_latex` (paper/tables/claims.{md,tex}; the
LaTeX needs the booktabs and longtable packages).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Mapping

NUM_CLAIMS = 13
PASSED, FAILED, SKIPPED, NOT_RUN, ERROR, MISSING = "passed", "failed", "skipped", "not run", "error", "missing"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Property:
    """One property test of a claim."""

    name: str  # the test function, e.g. "test_lost_support_is_never_regained" (Class.method in a class)
    summary: str  # first sentence of its docstring ("" if it has none)
    outcome: str  # passed, failed, skipped or not run (every parametrised case counted)


@dataclasses.dataclass(frozen=True)
class ClaimRow:
    """One claim: its statement and its properties with their outcomes."""

    claim: str  # "C1" .. "C13"
    statement: str  # first sentence of the claim module's docstring, label removed ("" if missing)
    module: str | None  # file name of theory/claims/cNN_*.py, None if there is none
    test_files: tuple[str, ...]  # file names of tests/claims/test_cNN_*.py
    properties: tuple[Property, ...]
    error: str | None = None  # a test file that could not be collected (import error), if any

    @property
    def status(self) -> str:
        """missing (no module, no test file or no property), error, failed, not run, or passed."""
        if self.module is None or not self.test_files or not self.properties:
            return MISSING
        outcomes = {p.outcome for p in self.properties}
        if self.error is not None:
            return ERROR
        if FAILED in outcomes:
            return FAILED
        if NOT_RUN in outcomes:
            return NOT_RUN
        return PASSED if PASSED in outcomes else SKIPPED

    @property
    def result(self) -> str:
        """The status with a count, e.g. "passed (5/5)"."""
        if self.status == MISSING:
            return MISSING
        passed = sum(p.outcome == PASSED for p in self.properties)
        return f"{self.status} ({passed}/{len(self.properties)})"


# --------------------------------------------------------------------------------------------------
# Reading sources and reports
# --------------------------------------------------------------------------------------------------


_ABBREVIATIONS = ("i.e.", "e.g.", "et al.", "cf.", "vs.", "resp.", "eq.", "fig.", "thm.")


def first_sentence(docstring: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line ("" for no docstring)."""
    if not docstring:
        return ""
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    for match in re.finditer(r"(?<=[.!?])\s+(?=[A-Z\"'(])", paragraph):
        if not paragraph[: match.start()].lower().endswith(_ABBREVIATIONS):
            return paragraph[: match.start()]
    return paragraph


def claim_statement(module_docstring: str | None) -> str:
    """The claim's statement: the first sentence without its "CNN:" label, first letter capitalised."""
    sentence = re.sub(r"^C\d+\s*[:.\-]\s*", "", first_sentence(module_docstring))
    return sentence[:1].upper() + sentence[1:]


def _claim_files(folder: Path, prefix: str, number: int) -> list[Path]:
    """Files prefix + cN_*.py or prefix + c0N_*.py in `folder`, sorted."""
    names = {f"{prefix}c{number}_", f"{prefix}c{number:02d}_"}
    return sorted(p for p in folder.glob(f"{prefix}c*.py") if any(p.name.startswith(n) for n in names))


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


def property_functions(path: Path) -> list[tuple[str, str]]:
    """(name, summary) of every test function of a test file: top-level test_* functions and test_*
    methods of Test* classes (as "Class.method"), in file order."""
    tree = _parse(path)
    if tree is None:
        return []
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            out.append((node.name, first_sentence(ast.get_docstring(node))))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    out.append((f"{node.name}.{item.name}", first_sentence(ast.get_docstring(item))))
    return out


def _error_summary(case) -> str:
    """The exception line ("E   ModuleNotFoundError: ...") of a failed test case, else its message."""
    element = case.find("error") if case.find("error") is not None else case.find("failure")
    raised = [line[1:].strip() for line in (element.text or "").splitlines() if line.startswith("E ")]
    return raised[-1] if raised else element.get("message", "")


def outcomes_from_junit(report) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """From a pytest JUnit XML report (a path or the XML text): ({(test file stem, test name): outcome},
    {test file stem: message} for files that failed to collect). Parametrised cases of one test are
    merged: failed if any failed or errored, else passed if any passed, else skipped."""
    if isinstance(report, str) and report.lstrip().startswith("<"):
        text = report
    elif isinstance(report, (str, os.PathLike)):
        try:
            text = Path(report).read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"report {str(report)!r} cannot be read: {error}") from error
    else:
        raise ValueError(f"report must be a path to a JUnit XML file or its text, got {type(report).__name__}")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise ValueError(f"report is not valid JUnit XML: {error}") from error
    outcomes: dict[tuple[str, str], str] = {}
    broken: dict[str, str] = {}
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        failed = case.find("failure") is not None or case.find("error") is not None
        if not classname:  # a collection error: name is the module's dotted path
            broken[name.split(".")[-1]] = _error_summary(case) if failed else ""
            continue
        parts = classname.split(".")
        stems = [i for i, part in enumerate(parts) if part.startswith("test_")]
        if not stems:
            continue
        stem = parts[stems[-1]]
        test = ".".join(parts[stems[-1] + 1 :] + [name.split("[")[0]])
        outcome = FAILED if failed else SKIPPED if case.find("skipped") is not None else PASSED
        previous = outcomes.get((stem, test))
        ranks = {FAILED: 2, PASSED: 1, SKIPPED: 0}
        if previous is None or ranks[outcome] > ranks[previous]:
            outcomes[(stem, test)] = outcome
    return outcomes, broken


def collect_claims(claims_dir: Path, tests_dir: Path, outcomes: Mapping[tuple[str, str], str],
                   broken: Mapping[str, str] | None = None) -> list[ClaimRow]:
    """One ClaimRow per claim C1..C13 from the module and test files found and the given outcomes."""
    broken = broken or {}
    rows = []
    for number in range(1, NUM_CLAIMS + 1):
        modules = _claim_files(Path(claims_dir), "", number)
        tests = _claim_files(Path(tests_dir), "test_", number)
        module = modules[0] if modules else None
        tree = _parse(module) if module is not None else None
        statement = claim_statement(ast.get_docstring(tree)) if tree is not None else ""
        properties = tuple(
            Property(name, summary, outcomes.get((path.stem, name), NOT_RUN))
            for path in tests
            for name, summary in property_functions(path)
        )
        errors = [f"{path.name}: {broken[path.stem] or 'collection failed'}" for path in tests if path.stem in broken]
        rows.append(ClaimRow(f"C{number}", statement, module.name if module else None,
                             tuple(p.name for p in tests), properties, "; ".join(errors) or None))
    return rows


# --------------------------------------------------------------------------------------------------
# Running the claim tests
# --------------------------------------------------------------------------------------------------


def run_claim_tests(junit_path: Path, *, profile: str = "ci", include_slow: bool = False,
                    tests_dir: Path | None = None, extra_args: tuple[str, ...] = ()) -> int:
    """Run pytest on tests/claims in a subprocess with Hypothesis profile `profile`, writing a JUnit XML
    report to `junit_path`; returns pytest's exit code (0 all passed, 1 some failed)."""
    tests = Path(tests_dir) if tests_dir is not None else REPO_ROOT / "tests" / "claims"
    # A test file that fails to import (a claim being written) must not stop the others.
    command = [sys.executable, "-m", "pytest", str(tests), "-q", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={junit_path}"]
    if not include_slow:
        command += ["-m", "not slow"]
    environment = {**os.environ, "HYPOTHESIS_PROFILE": profile}
    return subprocess.run(command + list(extra_args), cwd=REPO_ROOT, env=environment, check=False).returncode


# --------------------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------------------


def to_text(rows: list[ClaimRow]) -> str:
    """The table for a terminal: one block per claim, one indented line per property."""
    lines = []
    for row in rows:
        lines.append(f"{row.claim:<4} {row.result:<16} {row.statement or '(no claim module yet)'}")
        if row.error:
            lines.append(f"     {ERROR:<16} {row.error}")
        for prop in row.properties:
            lines.append(f"     {prop.outcome:<16} {prop.name}: {prop.summary}")
    return "\n".join(lines) + "\n"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def escape_markdown(text: str) -> str:
    """Text safe inside a Markdown table cell: backslash-escape the characters Markdown interprets."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def to_markdown(rows: list[ClaimRow], note: str = "") -> str:
    """A Markdown table: a bold row per claim (statement and result), a row per property below it."""
    lines = ["| Claim | Statement and properties | Result |", "|---|---|---|"]
    for row in rows:
        statement = escape_markdown(row.statement) if row.statement else "*no claim module yet*"
        lines.append(f"| **{row.claim}** | {statement} | {row.result} |")
        if row.error:
            lines.append(f"| | {escape_markdown(row.error)} | {ERROR} |")
        for prop in row.properties:
            lines.append(f"| | `{prop.name}`: {escape_markdown(prop.summary)} | {prop.outcome} |")
    if note:
        lines += ["", escape_markdown(note)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}",
}


def escape_latex(text: str) -> str:
    """Text safe in LaTeX's text mode: every special character replaced by its text-mode command."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def _latex_name(name: str) -> str:
    """A test name in typewriter type that may break after its underscores."""
    return r"\texttt{" + escape_latex(name).replace(r"\_", r"\_\allowbreak{}") + "}"


LATEX_CAPTION = (r"The claims table: every exact property of every claim and whether it passed "
                 r"(\texttt{python -m theory.claims}).")


def to_latex(rows: list[ClaimRow], note: str = "", caption: str = LATEX_CAPTION, label: str = "tab:claims") -> str:
    """A longtable (booktabs rules): a row per claim, then a row per property. It breaks across pages,
    so it carries its own caption and label and is input at the top level of a document (not inside a
    table float or a box)."""
    header = [r"\toprule", r"Claim & Statement and properties & Result \\", r"\midrule"]
    lines = [f"% {note}" if note else "% Generated by python -m theory.claims.",
             "% Needs the booktabs and longtable packages; input it outside any float.",
             r"\begin{longtable}{@{}l p{0.70\linewidth} l@{}}", rf"\caption{{{caption}}}\label{{{label}}} \\",
             *header, r"\endfirsthead", *header, r"\endhead"]
    for index, row in enumerate(rows):
        if index:
            lines.append(r"\midrule")
        statement = escape_latex(row.statement) if row.statement else r"\emph{no claim module yet}"
        lines.append(rf"\textbf{{{row.claim}}} & {statement} & {escape_latex(row.result)} \\")
        if row.error:
            lines.append(rf" & \quad {escape_latex(row.error)} & {ERROR} \\")
        for prop in row.properties:
            lines.append(rf" & \quad {_latex_name(prop.name)}: {escape_latex(prop.summary)} & {escape_latex(prop.outcome)} \\")
    lines += [r"\bottomrule", r"\end{longtable}"]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[ClaimRow], out_dir: Path, note: str = "") -> tuple[Path, Path]:
    """Write claims.md and claims.tex into `out_dir` (created if needed); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, latex = out_dir / "claims.md", out_dir / "claims.tex"
    markdown.write_text(to_markdown(rows, note), encoding="utf-8")
    latex.write_text(to_latex(rows, note), encoding="utf-8")
    return markdown, latex
