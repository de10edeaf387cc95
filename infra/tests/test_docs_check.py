"""infra/docs-check.py finds each kind of breakage it promises to, in a small repository
made for each test, and passes a clean one."""

import importlib.util
import tempfile
import textwrap
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "docs-check.py"
spec = importlib.util.spec_from_file_location("docs_check", SCRIPT)
docs_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_check)

MAKEFILE = """\
.PHONY: test docs
test: docs-check
\tcargo test
docs-check:
\tpython3 infra/docs-check.py
docs: $(MDBOOK)
\tmdbook build docs
$(MDBOOK):
\tcargo install mdbook
"""

CLEAN = {
    "Makefile": MAKEFILE,
    "README.md": """\
        # Project

        Run `make test`; `make docs BOOK=1` builds [the book](docs/src/intro.md#first-steps).
        See [below](#the-two-commands) and [the licence](LICENSE).

        ## The two commands

        ```console
        $ make test
        $ echo "[not a link](missing.md)"
        ```
        """,
    "LICENSE": "MIT\n",
    "docs/src/SUMMARY.md": """\
        # Summary

        - [Intro](intro.md)
            - [Included](included.md)
        """,
    "docs/src/intro.md": """\
        # Intro

        ## First steps

        A link to [the part](included.md#from-the-readme-part), one to
        [a heading](#a-disconnect-that-never-came), and one [across
        lines](intro.md#first-steps).

        ## A `$disconnect` that never came

        ## Repeated

        ## Repeated

        [second](#repeated-1)
        """,
    "docs/src/included.md": """\
        {{#include part.txt}}
        """,
    "docs/src/part.txt": """\
        ## From the README part
        """,
}
CLEAN = {name: textwrap.dedent(text) for name, text in CLEAN.items()}


class DocsCheckTest(unittest.TestCase):
    def check(self, changes=None, removals=()):
        files = dict(CLEAN)
        files.update(changes or {})
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name, text in files.items():
                if name in removals:
                    continue
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            return docs_check.Checker(root).run()

    def assertReported(self, problems, *fragments):
        self.assertEqual(len(problems), 1, problems)
        for fragment in fragments:
            self.assertIn(fragment, problems[0])

    def test_a_clean_repository_passes(self):
        self.assertEqual(self.check(), [])

    def test_a_link_to_a_missing_file_fails(self):
        readme = CLEAN["README.md"].replace("(LICENSE)", "(LICENCE)")
        self.assertReported(self.check({"README.md": readme}), "README.md:4", "broken link 'LICENCE'")

    def test_a_link_to_a_missing_heading_fails(self):
        readme = CLEAN["README.md"].replace("#first-steps", "#first-step")
        self.assertReported(self.check({"README.md": readme}), "broken anchor", "#first-step")

    def test_a_link_to_a_missing_heading_of_the_same_file_fails(self):
        intro = CLEAN["docs/src/intro.md"].replace("(#repeated-1)", "(#repeated-2)")
        self.assertReported(self.check({"docs/src/intro.md": intro}), "docs/src/intro.md", "#repeated-2")

    def test_a_missing_chapter_fails(self):
        problems = self.check(removals={"docs/src/included.md"})
        self.assertTrue(any("included.md" in p and "does not exist" in p for p in problems), problems)

    def test_a_chapter_missing_from_the_summary_fails(self):
        self.assertReported(self.check({"docs/src/orphan.md": "# Orphan\n"}), "orphan.md", "SUMMARY.md")

    def test_a_chapter_linking_outside_the_book_fails(self):
        intro = CLEAN["docs/src/intro.md"] + "\n[licence](../../LICENSE)\n"
        self.assertReported(self.check({"docs/src/intro.md": intro}), "leaves docs/src")

    def test_an_include_of_a_missing_file_fails(self):
        problems = self.check({"docs/src/included.md": "{{#include gone.txt}}\n"})
        self.assertTrue(any("included.md:1" in p and "missing file: gone.txt" in p for p in problems), problems)

    def test_an_unknown_make_target_fails(self):
        readme = CLEAN["README.md"].replace("$ make test", "$ make tests")
        self.assertReported(self.check({"README.md": readme}), "`make tests`")

    def test_an_unknown_make_target_in_a_code_span_fails(self):
        intro = CLEAN["docs/src/intro.md"] + "\nRun `make BOOK=1 serve` to serve it.\n"
        self.assertReported(self.check({"docs/src/intro.md": intro}), "`make serve`")

    def test_make_in_prose_is_not_a_target(self):
        intro = CLEAN["docs/src/intro.md"] + "\nThis would make things worse.\n"
        self.assertEqual(self.check({"docs/src/intro.md": intro}), [])

    def test_a_readme_over_the_limit_fails(self):
        readme = CLEAN["README.md"] + "line\n" * docs_check.README_MAX_LINES
        self.assertReported(self.check({"README.md": readme}), "more than 160")

    def test_headings_are_slugged_as_github_and_mdbook_do(self):
        self.assertEqual(docs_check.slug("A `$disconnect` that never came"), "a-disconnect-that-never-came")
        self.assertEqual(docs_check.slug("Sizing the fan-out for 10,000 posts a second"),
                         "sizing-the-fan-out-for-10000-posts-a-second")
        self.assertEqual(docs_check.slug("Browsers: `@airwave/client`"), "browsers-airwaveclient")
        self.assertEqual(docs_check.slug("The [tables](x.md) and **more**"), "the-tables-and-more")


if __name__ == "__main__":
    unittest.main()
