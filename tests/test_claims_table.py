"""The claims table builder (theory/claims/table.py) on fake claim files and a fake JUnit report.

Nothing here runs the claim tests: the report is written by hand in the shape pytest's --junitxml
produces (a collection error has an empty classname; a method of a test class has the class in its
classname; parametrised cases share a function name).
"""

from __future__ import annotations

import re

import pytest

from theory.claims import table
from theory.claims.__main__ import ClaimsConfig, main

REPORT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest">
<testcase classname="" name="tests.claims.test_c03_broken"><error message="collection failure">Traceback:
E   ModuleNotFoundError: No module named 'missing_thing'</error></testcase>
<testcase classname="tests.claims.test_c01_alpha" name="test_exact_100%_&amp;_more[1]" />
<testcase classname="tests.claims.test_c01_alpha" name="test_exact_100%_&amp;_more[2]" />
<testcase classname="tests.claims.test_c01_alpha" name="test_bound"><failure message="no">E assert 1 == 2</failure></testcase>
<testcase classname="tests.claims.test_c01_alpha.TestGroup" name="test_inside"><skipped message="later" /></testcase>
<testcase classname="tests.claims.test_c02_beta" name="test_one[a]" />
<testcase classname="tests.claims.test_c02_beta" name="test_one[b]"><failure message="x">E boom</failure></testcase>
<testcase classname="tests.claims.test_c02_beta" name="test_two" />
</testsuite></testsuites>"""


@pytest.fixture
def fake_repo(tmp_path):
    """claims/ and tests/ folders with claim modules C1, C2, C3 (C3's tests do not import), C4 without
    tests, and a C5 test file without a module; everything else is missing."""
    claims, tests = tmp_path / "claims", tmp_path / "tests"
    claims.mkdir()
    tests.mkdir()
    (claims / "c01_alpha.py").write_text(
        '"""C1: costs of 5% & more_than $x$ in {braces}, ~tilde^ and a\\\\b | pipe *star* <tag> #1.\n\n'
        'More text.\n"""\n')
    (claims / "c02_beta.py").write_text('"""C2: the second claim wraps\nacross two lines (seed 001). Then more."""\n')
    (claims / "c03_broken.py").write_text('"""C3: broken tests."""\n')
    (claims / "c04_untested.py").write_text('"""C4: no tests yet."""\n')
    (claims / "enumeration.py").write_text('"""Not a claim."""\n')
    (tests / "test_c01_alpha.py").write_text(
        "def test_exact_100():\n    '''Exact: 100% of p_t & q_t agree. Second sentence.'''\n\n"
        "def test_bound():\n    '''A bound holds.'''\n\n"
        "def helper():\n    pass\n\n"
        "class TestGroup:\n    def test_inside(self):\n        '''Inside a class.'''\n")
    (tests / "test_c02_beta.py").write_text(
        "def test_one():\n    '''One.'''\n\ndef test_two():\n    '''Two.'''\n\ndef test_three():\n    pass\n")
    (tests / "test_c03_broken.py").write_text("import missing_thing\n\ndef test_x():\n    '''X.'''\n")
    (tests / "test_c05_orphan.py").write_text("def test_y():\n    '''Y.'''\n")
    return claims, tests


def fake_rows(fake_repo, report=REPORT):
    # test_exact_100 is reported under a different parametrised name: it must show as not run.
    outcomes, broken = table.outcomes_from_junit(report)
    return table.collect_claims(*fake_repo, outcomes, broken)


def test_outcomes_merge_parametrised_cases_and_record_collection_errors():
    """Parametrised cases merge (any failure fails), class methods are Class.method, skips are kept,
    and a collection error is recorded against its file with the exception line."""
    outcomes, broken = table.outcomes_from_junit(REPORT)
    assert outcomes[("test_c02_beta", "test_one")] == table.FAILED
    assert outcomes[("test_c02_beta", "test_two")] == table.PASSED
    assert outcomes[("test_c01_alpha", "test_exact_100%_&_more")] == table.PASSED
    assert outcomes[("test_c01_alpha", "TestGroup.test_inside")] == table.SKIPPED
    assert broken == {"test_c03_broken": "ModuleNotFoundError: No module named 'missing_thing'"}


@pytest.mark.parametrize(
    "docstring, sentence",
    [
        (None, ""),
        ("One line.", "One line."),
        ("Wraps\n    over lines. Second one.\n\nNext paragraph.", "Wraps over lines."),
        ("Uses i.e. Abbreviations, e.g. Like this, as in Shai et al. 2024. Then more.",
         "Uses i.e. Abbreviations, e.g. Like this, as in Shai et al. 2024."),
        ('Intuition: "a quote." Then more.', 'Intuition: "a quote." Then more.'),
        ("A bound (x <= 1). (Then a remark.)", "A bound (x <= 1)."),
    ],
)
def test_first_sentence(docstring, sentence):
    """The summary is the first sentence of the first paragraph, on one line, not cut at abbreviations."""
    assert table.first_sentence(docstring) == sentence


def test_rows_cover_every_claim_with_statuses(fake_repo):
    """Thirteen rows in order; statements are first sentences without labels; missing modules or tests
    give "missing"; a failure, a collection error and an unreported test each set the claim's status."""
    rows = fake_rows(fake_repo)
    assert [row.claim for row in rows] == [f"C{n}" for n in range(1, 14)]
    by_claim = {row.claim: row for row in rows}
    assert by_claim["C2"].statement == "The second claim wraps across two lines (seed 001)."
    assert by_claim["C1"].statement.startswith("Costs of 5% & more_than")
    assert [p.name for p in by_claim["C1"].properties] == ["test_exact_100", "test_bound", "TestGroup.test_inside"]
    assert by_claim["C1"].properties[0].summary == "Exact: 100% of p_t & q_t agree."
    assert [p.outcome for p in by_claim["C1"].properties] == [table.NOT_RUN, table.FAILED, table.SKIPPED]
    assert by_claim["C1"].status == table.FAILED and by_claim["C1"].result == "failed (0/3)"
    assert by_claim["C2"].status == table.FAILED
    assert [p.outcome for p in by_claim["C2"].properties] == [table.FAILED, table.PASSED, table.NOT_RUN]
    assert by_claim["C3"].status == table.ERROR and "missing_thing" in by_claim["C3"].error
    assert by_claim["C4"].status == table.MISSING and by_claim["C4"].statement == "No tests yet."
    assert by_claim["C5"].status == table.MISSING and by_claim["C5"].module is None
    assert all(row.status == table.MISSING and row.statement == "" for row in rows[5:])


def test_passing_claim(fake_repo):
    """A claim whose every property passed is "passed (n/n)"."""
    report = REPORT.replace('<failure message="x">E boom</failure>', "").replace(
        '<testcase classname="tests.claims.test_c02_beta" name="test_two" />',
        '<testcase classname="tests.claims.test_c02_beta" name="test_two" />'
        '<testcase classname="tests.claims.test_c02_beta" name="test_three" />')
    row = fake_rows(fake_repo, report)[1]
    assert row.status == table.PASSED and row.result == "passed (3/3)"


def test_markdown_escapes_and_layout(fake_repo):
    """One header, a bold row per claim, a row per property with the name in code; |, *, _, <, >, #, [, ]
    and backslashes are escaped so that no cell breaks the table."""
    text = table.to_markdown(fake_rows(fake_repo), note="Generated by a_test.")
    lines = text.splitlines()
    assert lines[0] == "| Claim | Statement and properties | Result |" and lines[1] == "|---|---|---|"
    c1 = next(line for line in lines if line.startswith("| **C1** |"))
    assert c1 == (r"| **C1** | Costs of 5% & more\_than $x$ in {braces}, ~tilde^ and a\\b \| pipe \*star\* "
                  r"\<tag\> \#1. | failed (0/3) |")
    assert "| | `test_exact_100`: Exact: 100% of p\\_t & q\\_t agree. | not run |" in lines
    assert "| **C6** | *no claim module yet* | missing |" in lines
    assert lines[-1] == r"Generated by a\_test."
    for line in lines[2:-2]:  # every table row has exactly four unescaped pipes
        assert len(re.findall(r"(?<!\\)\|", line)) == 4, line


def test_latex_escapes_and_layout(fake_repo):
    """A booktabs longtable; every special character of the text is escaped (% & $ # _ { } ~ ^ \\ | < >),
    test names are typewriter with break points after underscores, and each row has two column
    separators."""
    text = table.to_latex(fake_rows(fake_repo), note="Generated by a_test 100%.")
    lines = text.splitlines()
    assert lines[0] == r"% Generated by a_test 100%."
    assert r"\begin{longtable}{@{}l p{0.70\linewidth} l@{}}" in lines and lines[-1] == r"\end{longtable}"
    # A longtable cannot sit in a table float, so its caption and label are its own first row.
    begin = lines.index(r"\begin{longtable}{@{}l p{0.70\linewidth} l@{}}")
    assert lines[begin + 1] == rf"\caption{{{table.LATEX_CAPTION}}}\label{{tab:claims}} \\"
    assert lines.count(r"\endfirsthead") == 1 and lines.count(r"\endhead") == 1
    c1 = next(line for line in lines if line.startswith(r"\textbf{C1}"))
    assert c1 == (r"\textbf{C1} & Costs of 5\% \& more\_than \$x\$ in \{braces\}, \textasciitilde{}tilde"
                  r"\textasciicircum{} and a\textbackslash{}b \textbar{} pipe *star* \textless{}tag\textgreater{} "
                  r"\#1. & failed (0/3) \\")
    assert (r" & \quad \texttt{test\_\allowbreak{}exact\_\allowbreak{}100}: Exact: 100\% of p\_t \& q\_t agree."
            r" & not run \\") in lines
    assert r"\textbf{C6} & \emph{no claim module yet} & missing \\" in lines
    for line in lines:
        if line.endswith(r"\\") and not line.startswith(("Claim", "%", r"\caption")):
            body = line.replace(r"\&", "")
            assert body.count("&") == 2, line
            assert not re.search(r"(?<!\\)[%#$]", body), line


def test_text_table_lists_every_claim(fake_repo):
    """The console table has one line per claim and per property."""
    rows = fake_rows(fake_repo)
    text = table.to_text(rows)
    assert len(text.splitlines()) == len(rows) + sum(len(row.properties) for row in rows) + 1  # + C3's error
    assert "(no claim module yet)" in text


def test_main_tabulates_an_existing_report(tmp_path, capsys):
    """`python -m theory.claims --junitxml FILE` reads the report instead of running pytest, prints the
    table for the real claim modules and writes claims.md and claims.tex."""
    report = tmp_path / "report.xml"
    report.write_text(REPORT.replace("test_c01_alpha", "test_c12_own_outputs"))
    status = main(["--junitxml", str(report), "--out-dir", str(tmp_path / "tables")])
    printed = capsys.readouterr().out
    assert status == 0
    assert printed.startswith("C1 ") and "\nC13 " in printed
    assert (tmp_path / "tables" / "claims.md").read_text().startswith("| Claim |")
    assert r"\begin{longtable}" in (tmp_path / "tables" / "claims.tex").read_text()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: table.outcomes_from_junit("<not xml"), "report"),
        (lambda: table.outcomes_from_junit(42), "report"),
        (lambda: table.outcomes_from_junit("no/such/report.xml"), "report"),
        (lambda: ClaimsConfig(profile="fast"), "profile"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
