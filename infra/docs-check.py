#!/usr/bin/env python3
"""Checks the README, the files at the root and the book (docs/) without building it.

Fails (exit 1, one line per problem) when:
- a relative link in a Markdown file names a file that does not exist, or an #anchor
  that no heading of the target file produces (headings are slugged as GitHub and mdBook
  both do: lower case, spaces to '-', punctuation dropped, repeats numbered);
- a chapter of the book links outside docs/src (mdBook copies only docs/src, so such a
  link is broken in the built book: name the file in a code span instead);
- a chapter listed in docs/src/SUMMARY.md is missing, or a Markdown file under docs/src
  is not listed there (mdBook would not render it), or an {{#include}} names a missing
  file;
- a `make TARGET` in a code span or code block names no target of the Makefile;
- README.md is longer than README_MAX_LINES lines.

Standard library only; `make docs-check` runs it with its tests
(infra/tests/test_docs_check.py).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

README_MAX_LINES = 160
# Markdown outside the book that is checked too (the browser package's README is what npm
# shows, and the book includes it).
ROOT_DOCS = ("README.md", "CONTRIBUTING.md", "SECURITY.md", "CHANGELOG.md", "client/browser/README.md")
BOOK_SRC = Path("docs/src")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target "title"): the text may span lines, the target has no spaces.
INLINE_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
INCLUDE = re.compile(r"\{\{#(?:include|rustdoc_include)\s+([^}\s]+)\s*\}\}")
# A code span may wrap onto the next line but never crosses a blank line.
CODE_SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.DOTALL)
MAKE_CALL = re.compile(r"(?:^|[\s;&|(`$])make\s+([^\n;&|)`]*)")
MAKE_RULE = re.compile(r"^([A-Za-z0-9_./$() -]+?)\s*::?(?!=)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def slug(text: str) -> str:
    """The anchor GitHub and mdBook give a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    out = []
    for ch in text.strip().lower():
        if ch.isalnum() or ch in "_-":
            out.append(ch)
        elif ch.isspace():
            out.append("-")
    return "".join(out)


def split_code(text: str) -> tuple[str, list[str]]:
    """The text with fenced code blocks blanked out (lines kept), and the blocks' contents."""
    prose, blocks, block, fence = [], [], [], None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence, block = m.group(1)[0] * len(m.group(1)), []
            prose.append("")
        elif fence is not None:
            if line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
                blocks.append("\n".join(block))
                fence = None
            else:
                block.append(line)
            prose.append("")
        else:
            prose.append(line)
    if fence is not None:
        blocks.append("\n".join(block))
    return "\n".join(prose), blocks


class Checker:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.problems: list[str] = []
        self._anchors: dict[Path, set[str]] = {}
        self._targets: set[str] | None = None
        self.checked = 0

    def report(self, path: Path, line: int, message: str) -> None:
        self.problems.append(f"{path.relative_to(self.root)}:{line}: {message}")

    # --- anchors ---------------------------------------------------------

    def expanded(self, path: Path, depth: int = 0) -> str:
        text = path.read_text(encoding="utf-8")
        if depth > 5:
            return text

        def include(m: re.Match[str]) -> str:
            target = (path.parent / m.group(1).split(":")[0]).resolve()
            return self.expanded(target, depth + 1) if target.is_file() else ""

        return INCLUDE.sub(include, text)

    def anchors(self, path: Path) -> set[str]:
        if path not in self._anchors:
            prose, _ = split_code(self.expanded(path))
            seen: dict[str, int] = {}
            found = set()
            for line in prose.split("\n"):
                m = HEADING.match(line)
                if not m:
                    continue
                base = slug(m.group(2))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
            found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", prose))
            self._anchors[path] = found
        return self._anchors[path]

    # --- links -----------------------------------------------------------

    def check_links(self, path: Path, in_book: bool) -> None:
        text = path.read_text(encoding="utf-8")
        prose, _ = split_code(text)
        # Code spans are not links; blank them but keep line numbers.
        prose = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)
        book_root = (self.root / BOOK_SRC).resolve()
        targets = [(m.start(), m.group(3)) for m in INLINE_LINK.finditer(prose)]
        targets += [(m.start(), m.group(1)) for m in REFERENCE_DEF.finditer(prose)]
        for start, target in targets:
            line = prose.count("\n", 0, start) + 1
            if not target or EXTERNAL.match(target) or target.startswith("//"):
                continue
            file_part, _, anchor = target.partition("#")
            if file_part.startswith("/"):
                self.report(path, line, f"absolute link {target!r}: use a path relative to this file")
                continue
            dest = (path.parent / file_part).resolve() if file_part else path.resolve()
            if in_book and not dest.is_relative_to(book_root):
                self.report(path, line, f"link {target!r} leaves docs/src, which the built book does not contain: "
                            "name the file in a code span instead")
                continue
            if not dest.exists():
                self.report(path, line, f"broken link {target!r}: {file_part} does not exist")
                continue
            if anchor:
                if dest.suffix != ".md" or not dest.is_file():
                    self.report(path, line, f"link {target!r}: an anchor into a file that is not Markdown")
                elif anchor not in self.anchors(dest):
                    self.report(path, line, f"broken anchor {target!r}: no heading of {dest.relative_to(self.root)} "
                                f"has the anchor #{anchor}")

    def check_includes(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        for m in INCLUDE.finditer(text):
            target = (path.parent / m.group(1).split(":")[0]).resolve()
            if not target.is_file():
                line = text.count("\n", 0, m.start()) + 1
                self.report(path, line, f"{{{{#include}}}} of a missing file: {m.group(1)}")

    # --- the book's table of contents -----------------------------------

    def check_summary(self) -> None:
        src = self.root / BOOK_SRC
        summary = src / "SUMMARY.md"
        if not summary.is_file():
            self.problems.append(f"{BOOK_SRC}/SUMMARY.md is missing")
            return
        listed = set()
        prose, _ = split_code(summary.read_text(encoding="utf-8"))
        for m in INLINE_LINK.finditer(prose):
            if m.group(3):
                listed.add((src / m.group(3).partition("#")[0]).resolve())
        for chapter in sorted(src.rglob("*.md")):
            if chapter.name != "SUMMARY.md" and chapter.resolve() not in listed:
                self.report(chapter, 1, "not listed in docs/src/SUMMARY.md, so the book does not contain it")

    # --- make targets ----------------------------------------------------

    def make_targets(self) -> set[str]:
        if self._targets is None:
            targets = set()
            makefile = self.root / "Makefile"
            text = makefile.read_text(encoding="utf-8") if makefile.is_file() else ""
            for line in text.split("\n"):
                if line.startswith(("\t", "#", " ")):
                    continue
                m = MAKE_RULE.match(line)
                if m:
                    targets.update(t for t in m.group(1).split() if "$" not in t and "%" not in t)
            self._targets = targets
        return self._targets

    def check_make_targets(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        prose, blocks = split_code(text)
        snippets = [m.group(2) for m in CODE_SPAN.finditer(prose)] + blocks
        for snippet in snippets:
            for m in MAKE_CALL.finditer(snippet):
                for word in m.group(1).split():
                    if word.startswith("-") or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
                        continue
                    if re.fullmatch(r"[a-z][a-z0-9_-]*", word) and word not in self.make_targets():
                        line = text.count("\n", 0, text.find(snippet)) + 1 if snippet in text else 1
                        self.report(path, line, f"`make {word}`: the Makefile has no target {word!r}")
                    break

    # --- all of it ---------------------------------------------------------

    def run(self) -> list[str]:
        readme = self.root / "README.md"
        if readme.is_file():
            lines = len(readme.read_text(encoding="utf-8").splitlines())
            if lines > README_MAX_LINES:
                self.report(readme, lines, f"README.md has {lines} lines, more than {README_MAX_LINES}: "
                            "move the detail into the book (docs/src)")
        files = [(self.root / name, False) for name in ROOT_DOCS if (self.root / name).is_file()]
        book = self.root / BOOK_SRC
        if book.is_dir():
            files += [(p, True) for p in sorted(book.rglob("*.md"))]
            self.check_summary()
        self.checked = len(files)
        for path, in_book in files:
            self.check_links(path, in_book)
            self.check_make_targets(path)
            if in_book:
                self.check_includes(path)
        return self.problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the repository's root (default: the one this script is in)")
    args = parser.parse_args(argv)
    checker = Checker(args.root)
    problems = checker.run()
    for problem in problems:
        print(f"docs-check: {problem}", file=sys.stderr)
    if problems:
        print(f"docs-check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"docs-check: links, anchors, make targets and the README's length are fine ({checker.checked} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
