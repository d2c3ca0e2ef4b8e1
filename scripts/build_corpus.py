#!/usr/bin/env python3
"""Build the tunesmith-base pretraining corpus from freely licensed Debian packages.

Every source is a Debian package whose copyright file grants a free licence (public
domain, GPL, CC-BY-SA, GFDL without invariant sections, PSF, Artistic/GPL, MIT). The
packages are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into
``OUT/_pkgs`` -- nothing is installed into the system, no dependencies are pulled
(``r-cran-janeaustenr`` would otherwise bring in all of R), and the exact ``.deb``
version is recorded.

Pipeline (deterministic for a given set of ``.deb`` files):

1. extract: one extractor per file format (HTML/XML help pages, POD, reST/asciidoc/plain
   text, SWORD zText bible modules, R lazy-load data) yields raw documents, each a list
   of paragraphs; code blocks, tables, navigation and markup are dropped on the way;
2. clean: paragraphs are normalised (NFC, ASCII quotes, one space), non-prose paragraphs
   (code-like, too few letters) and licence boilerplate are dropped, headings are kept
   only when prose follows, long paragraphs already seen are dropped (cross-file dedup);
3. pack: paragraphs become documents of ``MIN_WORDS``..``MAX_WORDS`` words (about
   ``TARGET_WORDS``), split at paragraph boundaries, short raw documents merged;
4. filter + dedup: non-English documents (too few English function words) and exact
   duplicates are dropped; a source over its ``max_mb`` cap is sampled down (seeded);
5. split: 1% of each source's documents (at least one) go to ``heldout.jsonl``; both
   splits are shuffled with a fixed seed.

Outputs in OUT (default ``.cache/corpus``): ``train.jsonl``, ``heldout.jsonl`` (one
``{"text": ..., "source": PKG}`` per line) and ``corpus_stats.json``.

Usage: ``python scripts/build_corpus.py [--out DIR] [--no-install] [--seed N]``
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import json
import random
import re
import struct
import subprocess
import sys
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

MIN_WORDS, TARGET_WORDS, MAX_WORDS = 200, 1000, 3000
HELDOUT_FRACTION = 0.01

Paragraphs = list[str]

# ----------------------------------------------------------------------------- HTML / XML


# Tags whose text flows inside a paragraph; every other tag starts a new paragraph.
INLINE_TAGS = set(
    """a abbr acronym b big cite code dfn em emphasis font i kbd q s samp small
span strong sub sup tt u var application citetitle command computeroutput envar filename
firstterm foreignphrase function guibutton guilabel guimenu guimenuitem guisubmenu keycap
keycombo literal menuchoice option parameter phrase productname quote replaceable
systemitem ulink userinput wordasword xref link gui guiseq key keyseq cmd app file sys
input output em""".split()
)
VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr"}
SKIP_TAGS = {
    "script",
    "style",
    "pre",
    "head",
    "nav",
    "table",
    "informaltable",
    "screen",
    "programlisting",
    "synopsis",
    "info",
    "textarea",
    "svg",
    "math",
    "figure",
    "header",
    "footer",
    "aside",
    "button",
    "label",
    "noscript",
    "select",
    "comment",
    "remark",
}
SKIP_CLASSES = {
    "navheader",
    "navfooter",
    "toc",
    "sphinxsidebar",
    "related",
    "footer",
    "headerlink",
    "breadcrumbs",
    "highlight",
    "sig",
    "footnotes",
    "footnote",
    "docs-header",
    "toc-backref",
    "line-block",
    "revhistory",
    "legalnotice",
    "relatedtopics",
    "rightside",
    "menu",
    "codebox",
    "fancy_toc",
}


class _TextExtractor(HTMLParser):
    """Collects paragraphs of visible prose from HTML, DocBook XML or Mallard pages."""

    def __init__(self, skip_tags: set[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.skip_tags = skip_tags
        self.paragraphs: Paragraphs = []
        self._buf: list[str] = []
        self._skip_tag: str | None = None
        self._skip_depth = 0

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        if text:
            self.paragraphs.append(text)
        self._buf = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag and tag not in VOID_TAGS:
                self._skip_depth += 1
            return
        classes = set((dict(attrs).get("class") or "").split())
        if (tag in self.skip_tags or classes & SKIP_CLASSES) and tag not in VOID_TAGS:
            self._skip_tag, self._skip_depth = tag, 1
            return
        if tag not in INLINE_TAGS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if self._skip_tag is None and tag not in INLINE_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        if tag not in INLINE_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip_tag is None:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_paragraphs(markup: str, layout_tables: bool = False) -> Paragraphs:
    """Visible prose paragraphs of an HTML/XML page (code, tables, navigation dropped).

    ``layout_tables``: the page uses tables for layout, so table text is kept."""
    if "projectmallard.org" in markup[:1000]:  # Mallard: a <code> on its own line is a block
        markup = re.sub(r"\n\s*<code\b.*?</code>", "\n", markup, flags=re.S)
    parser = _TextExtractor(SKIP_TAGS - {"table"} if layout_tables else SKIP_TAGS)
    parser.feed(markup)
    parser.close()
    return parser.paragraphs


# ------------------------------------------------------------------ lightweight text markup

_UNDERLINE = re.compile(r"^\s*([=\-~^+*#\"'`.:_])\1{2,}\s*$")
_BULLET = re.compile(r"^\s*(?:[*+\-\u2022]|#\.|\(?\d{1,3}[.)]|\(?[a-z][.)])\s+")
_TABLE = re.compile(r"^\s*(\+[-=+]+\+|\|.*\||={3,}\s+={3,})")
_INLINE_MARKUP = [
    (re.compile(r":[\w:+-]+:`([^`<]*?)\s*(?:<[^>`]*>)?`"), r"\1"),  # :role:`text <t>`
    (re.compile(r"`([^`<]+?)\s*<[^>`]+>`__?"), r"\1"),  # `text <url>`_
    (re.compile(r"``(.+?)``"), r"\1"),  # ``literal``
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),  # `x`, `ref`_
    (re.compile(r"linkgit:([\w.-]+)\[\d\]"), r"\1"),  # asciidoc linkgit
    (re.compile(r"\b(https?|link|mailto):\S+?\[([^\]]*)\]"), r"\2"),  # asciidoc links
    (re.compile(r"\[\[[^\]]*\]\]|<<[^>]*>>"), ""),  # anchors, xrefs
    (re.compile(r"(?<![\w*])\*\*?([^*\s][^*]*?)\*\*?(?![\w*])"), r"\1"),  # *em*, **strong**
    (re.compile(r"\{([^{}\n]+)\}"), r"\1"),  # jargon {cross-refs}
    (re.compile(r"(?<![\w_])_([^_\s][^_]*?)_(?![\w_])"), r"\1"),  # makeinfo _em_
]


def markup_text_paragraphs(text: str) -> Paragraphs:
    """Paragraphs of reST / asciidoc / makeinfo / plain text, literal blocks dropped.

    A block (lines between blank lines) is dropped when it is a directive or comment
    (``.. x``), a table, follows a ``::`` literal marker, is fenced by ``----``/``....``,
    or is indented deeper than the text's usual indentation (code or a literal block).
    List items keep their text without the bullet; heading underlines are removed.
    """
    # asciidoc listing/literal blocks: a fence line after a blank line, up to the same fence
    text = re.sub(r"(?m)(^[ \t]*\n)(-{4,}|\.{4,}|={4,}|\*{4,}|~{4,})[ \t]*\n(?:.*\n)*?\2[ \t]*$", r"\1", text)
    lines = text.expandtabs(8).split("\n")
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    base = max(set(indents), key=indents.count) if indents else 0
    paragraphs: Paragraphs = []
    literal_next = False
    for block in re.split(r"\n\s*\n", "\n".join(lines)):
        rows = [r for r in block.split("\n") if r.strip() and not _UNDERLINE.match(r)]
        if not rows:
            continue
        first = rows[0]
        indent = min(len(r) - len(r.lstrip()) for r in rows)  # info text indents line 1
        was_literal, literal_next = literal_next, block.rstrip().endswith("::")
        if first.lstrip().startswith(".. ") or any(_TABLE.match(r) for r in rows):
            continue
        if re.match(r"^\s*:[\w -]+:(\s|$)", first):  # field lists / asciidoc attributes
            continue
        if not _BULLET.match(first) and (was_literal or indent > base + 1):
            continue
        para = " ".join(r.strip() for r in rows)
        para = _BULLET.sub("", para).rstrip(":").strip() if _BULLET.match(first) else para
        if para.endswith("::"):
            para = para[:-1]
        para = re.sub(r"^=+\s+(.*?)(\s+=+)?$", r"\1", para)  # asciidoc "== Title =="
        for pattern, repl in _INLINE_MARKUP:
            para = pattern.sub(repl, para)
        paragraphs.append(para)
    return paragraphs


def asciidoc_paragraphs(text: str) -> Paragraphs:
    """Asciidoc (git manuals): a ``term::`` label becomes its own paragraph and its
    indented description is dedented; a ``+`` continuation line is a paragraph break."""
    lines, in_description = [], False
    for line in text.split("\n"):
        if re.match(r"^\S.*::\s*$", line):
            lines += [line.rstrip()[:-2], ""]
            in_description = True
        elif line.strip() == "+":
            lines.append("")
        else:
            in_description = in_description and bool(line.strip())
            lines.append(line.strip() if in_description else line)
    return markup_text_paragraphs("\n".join(lines))


def jargon_paragraphs(text: str) -> Paragraphs:
    """The Jargon File: ``:headword: n.`` lines become ``headword: n.`` headings."""
    return markup_text_paragraphs(re.sub(r"(?m)^(\s*):([^:\n]+):", r"\1\2:", text))


def pod_paragraphs(text: str) -> Paragraphs:
    """Paragraphs of a Perl POD file: verbatim (indented) blocks and commands dropped."""
    paragraphs: Paragraphs = []
    skipping = False
    for block in re.split(r"\n\s*\n", text):
        if not block.strip() or block[0] in " \t":
            continue
        if block.startswith("=begin") or block.startswith("=for"):
            skipping = block.startswith("=begin")
            continue
        if skipping:
            skipping = not block.startswith("=end")
            continue
        if block.startswith("="):
            cmd, _, rest = block.partition(" ")
            if cmd not in ("=head1", "=head2", "=head3", "=head4", "=item"):
                continue
            block = rest.lstrip("*").strip() if cmd == "=item" else rest
        for _ in range(3):  # innermost formatting codes first: C<...>, L<text|target> ...
            block = re.sub(
                r"E<(\w+)>",
                lambda m: {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}.get(m.group(1), ""),
                block,
            )
            block = re.sub(r"[XZ]<[^<>]*>", "", block)
            block = re.sub(r"L<([^<>|]*)\|[^<>]*>", r"\1", block)
            block = re.sub(
                r"L<\"?([^<>\"/]*)\"?(?:/\"?([^<>\"]*)\"?)?>", lambda m: m.group(2) or m.group(1), block
            )
            block = re.sub(r"[A-Z]<<+\s+(.*?)\s+>>+", r"\1", block)
            block = re.sub(r"[A-Z]<([^<>]*)>", r"\1", block)
        paragraphs.append(" ".join(block.split()))
    return paragraphs


# ------------------------------------------------------------------------ binary formats


def sword_ztext_books(module_dir: Path) -> Iterator[Paragraphs]:
    """Books of a SWORD zText module (OSIS markup): one paragraph list per book.

    ``*.bzs`` holds (offset, size, uncompressed size) per zlib block of ``*.bzz``;
    ``*.bzv`` holds (block, offset, size) per verse. Footnotes are dropped, titles kept.
    """
    for testament in ("ot", "nt"):
        bzs = (module_dir / f"{testament}.bzs").read_bytes()
        bzz = (module_dir / f"{testament}.bzz").read_bytes()
        bzv = (module_dir / f"{testament}.bzv").read_bytes()
        blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
        raw = [zlib.decompress(bzz[o : o + n]) for o, n, _ in blocks]
        osis = []
        for i in range(0, len(bzv), 10):
            block, offset, size = struct.unpack_from("<IIH", bzv, i)
            if size:
                osis.append(raw[block][offset : offset + size].decode("utf-8") + " ")
        markup = "".join(osis)
        markup = re.sub(r"<note\b.*?</note>", "", markup, flags=re.S)
        markup = re.sub(r"<(?:chapter|div)\b[^>]*type=\"book\"[^>]*/>", "<hr/><bk/>", markup)
        markup = re.sub(r"<div\b[^>]*\bsID=[^>]*/>", "<p/>", markup)  # paragraph starts
        markup = re.sub(r"</?(?:w|div|milestone|chapter|verse|transChange|seg|q|l|lg)\b[^>]*>", "", markup)
        for book in markup.split("<bk/>"):
            paragraphs = html_paragraphs(book)
            if paragraphs:
                yield paragraphs


def _r_decompress(buf: bytes) -> bytes:
    """One R lazy-load database entry: 4-byte big-endian length, then a zlib stream."""
    return zlib.decompress(buf[4:])


class _RUnserializer:
    """Minimal reader for R's XDR serialization (enough for vectors, lists, attributes)."""

    def __init__(self, data: bytes) -> None:
        assert data[:2] == b"X\n", "not an XDR R serialization"
        self.data, self.pos, self.refs = data, 2, []
        version = self._int()
        self.pos += 8
        if version == 3:
            self.pos += 4 + self._int()

    def _int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def read(self):
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 253, 242, 241, 251, 252):  # NULL, environments, markers
            return None
        if kind == 255:  # reference to an earlier symbol
            index = flags >> 8 or self._int()
            return self.refs[index - 1]
        if kind == 1:  # symbol
            self.refs.append(self.read())
            return self.refs[-1]
        if kind == 2:  # pairlist: attributes of a vector, as a dict
            if has_attr:
                self.read()
            tag = self.read() if has_tag else None
            out = {tag: self.read()}
            rest = self.read()
            return {**out, **rest} if isinstance(rest, dict) else out
        if kind == 9:  # string
            n = self._int()
            if n < 0:
                return None
            self.pos += n
            return self.data[self.pos - n : self.pos].decode("utf-8", "replace")
        n = self._int()
        if kind in (10, 13):
            value = struct.unpack_from(f">{n}i", self.data, self.pos)
            self.pos += 4 * n
        elif kind == 14:
            value = struct.unpack_from(f">{n}d", self.data, self.pos)
            self.pos += 8 * n
        elif kind in (16, 19, 20):
            value = [self.read() for _ in range(n)]
        else:
            raise ValueError(f"unsupported R type {kind}")
        if has_attr:
            self.read()
        return value


def austen_novels(data_dir: Path) -> Iterator[Paragraphs]:
    """Jane Austen's six novels (public domain texts) from r-cran-janeaustenr's data dir:
    one raw document per chapter. Each novel is an R character vector of lines."""
    index = _RUnserializer(gzip.decompress((data_dir / "Rdata.rdx").read_bytes())).read()
    rdb = (data_dir / "Rdata.rdb").read_bytes()
    for offset, length in index[0]:
        lines = _RUnserializer(_r_decompress(rdb[offset : offset + length])).read()
        text = "\n".join(line or "" for line in lines)
        for chapter in re.split(r"\n\s*(?:CHAPTER|Chapter) [IVXLC\d]+\.?\s*\n", text)[1:]:
            paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", chapter)]
            yield [re.sub(r"(?<!\w)_([^_]+)_(?!\w)", r"\1", p) for p in paragraphs if p]


# ------------------------------------------------------------------------------- sources


def _read_text(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8", "replace")


def from_files(fmt: str, *patterns: str, exclude: str | None = None) -> Callable:
    """Extractor reading every file matching ``patterns`` (sorted) with one parser."""
    parse = {
        "html": html_paragraphs,
        "text": markup_text_paragraphs,
        "pod": pod_paragraphs,
        "html-layout": lambda markup: html_paragraphs(markup, layout_tables=True),
        "asciidoc": asciidoc_paragraphs,
        "jargon": jargon_paragraphs,
    }[fmt]

    def extract(root: Path) -> Iterator[Paragraphs]:
        paths = sorted({p for pattern in patterns for p in root.glob(pattern)})
        if not paths:
            raise FileNotFoundError(f"no files match {patterns} under {root}")
        for path in paths:
            if not (exclude and re.search(exclude, path.relative_to(root).as_posix())):
                yield parse(_read_text(path))

    return extract


@dataclass(frozen=True)
class Source:
    package: str
    licence: str
    extracted: str
    subtree: str  # the only part of the package unpacked; extract() reads under it
    extract: Callable[[Path], Iterable[Paragraphs]]
    max_mb: float | None = None  # sample documents down to about this many MB of text


_INDEX = r"(^|/)(index|search|genindex|contents)(\.en)?\.html$"
SOURCES = [
    Source(
        "r-cran-janeaustenr",
        "public domain texts (package: MIT)",
        "Jane Austen's six novels, one raw document per chapter",
        "usr/lib/R/site-library/janeaustenr/data",
        austen_novels,
    ),
    Source(
        "sword-text-web",
        "public domain",
        "World English Bible with Deuterocanon (modern English), footnotes dropped",
        "usr/share/sword/modules/texts/ztext/engWEB2015eb",
        sword_ztext_books,
    ),
    Source(
        "cfi-en",
        "public domain",
        "'Copyright Does Not Exist', Linus Walleij's book on hacker history",
        "usr/share/doc/cfi-en/html",
        from_files("html-layout", "*.htm"),
    ),
    Source(
        "jargon-text",
        "public domain",
        "The Jargon File 4.4.7 (hacker slang lexicon)",
        "usr/share/doc/jargon-text",
        from_files("jargon", "jargon.txt.gz"),
    ),
    Source(
        "gnome-user-docs",
        "CC-BY-SA-3.0",
        "GNOME desktop help and system admin guide (Mallard pages, C locale)",
        "usr/share/help/C",
        from_files("html", "*/*.page"),
    ),
    Source(
        "mate-user-guide",
        "GFDL-1.1+",
        "MATE desktop user guide (DocBook, C locale)",
        "usr/share/help/C/mate-user-guide",
        from_files("html", "*.xml"),
    ),
    Source(
        "libreoffice-help-en-us",
        "MPL-2.0",
        "LibreOffice 7.4 help pages (en-US)",
        "usr/share/libreoffice/help/en-US/text",
        from_files("html", "**/*.html"),
        max_mb=8,
    ),
    Source(
        "gimp-help-en",
        "GFDL-1.2+ (no invariant sections)",
        "GIMP 2.10 user manual",
        "usr/share/gimp/2.0/help/en",
        from_files("html", "*.html"),
    ),
    Source(
        "debian-handbook",
        "GPL-2.0+ or CC-BY-SA-3.0",
        "The Debian Administrator's Handbook, English HTML",
        "usr/share/doc/debian-handbook/html/en-US",
        from_files("html", "*.html", exclude=_INDEX),
    ),
    Source(
        "debian-reference-en",
        "GPL-2+",
        "Debian Reference, English HTML",
        "usr/share/debian-reference",
        from_files("html", "*.en.html", exclude=_INDEX),
    ),
    Source(
        "debian-faq",
        "SPI permissive notice (verbatim and modified copies allowed)",
        "Debian GNU/Linux FAQ, English HTML",
        "usr/share/doc/debian/FAQ",
        from_files("html", "*.en.html", exclude=_INDEX),
    ),
    Source(
        "debian-history",
        "GPL-2+",
        "A Brief History of Debian, English HTML",
        "usr/share/doc/debian-history/docs",
        from_files("html", "*.en.html", exclude=_INDEX),
    ),
    Source(
        "developers-reference",
        "GPL-2",
        "Debian Developer's Reference, HTML chapters",
        "usr/share/developers-reference",
        from_files("html", "*.html", exclude=_INDEX + r"|^developers-reference\.html"),
    ),
    Source(
        "debian-policy",
        "GPL-2+",
        "Debian Policy Manual, HTML chapters and appendices",
        "usr/share/doc/debian-policy/policy.html",
        from_files("html", "ch-*.html", "ap-*.html"),
    ),
    Source(
        "installation-guide-amd64",
        "GPL-2",
        "Debian installation guide, English HTML",
        "usr/share/doc/installation-guide-amd64/en",
        from_files("html", "*.html", exclude=_INDEX),
    ),
    Source(
        "gnu-standards",
        "GFDL-1.3+ (no invariant sections)",
        "GNU Coding Standards and Information for Maintainers of GNU Software",
        "usr/share/doc/gnu-standards",
        from_files("text", "*.text.gz"),
    ),
    Source(
        "git-doc",
        "GPL-2",
        "Git manual pages, user manual and how-tos (asciidoc)",
        "usr/share/doc/git-doc",
        from_files("asciidoc", "*.txt", "*/*.txt", exclude=r"RelNotes|^config/"),
    ),
    Source(
        "sqlite3-doc",
        "public domain",
        "SQLite documentation, HTML (code dropped)",
        "usr/share/doc/sqlite3",
        from_files(
            "html",
            "**/*.html",
            exclude=r"releaselog|syntax/|"
            r"(^|/)(changes|doc|docs|sitemap|requirements)\.html",
        ),
        max_mb=5,
    ),
    Source(
        "postgresql-doc-15",
        "PostgreSQL",
        "PostgreSQL 15 manual, HTML (code dropped)",
        "usr/share/doc/postgresql-doc-15/html",
        from_files("html", "*.html", exclude=r"^release-|^bookindex|" + _INDEX),
        max_mb=8,
    ),
    Source(
        "perl-doc",
        "GPL-1+ or Artistic",
        "Perl core documentation and FAQ (POD)",
        "usr/share/perl",
        from_files(
            "pod", "*/pod/*.pod", exclude=r"perl5\d+delta|perl(api|intern|toc|diag|uniprops|modlib)\.pod"
        ),
        max_mb=6,
    ),
    Source(
        "python3.11-doc",
        "PSF-2.0",
        "Python 3.11 documentation, HTML (code dropped)",
        "usr/share/doc/python3.11/html",
        from_files(
            "html",
            "**/*.html",
            exclude=r"genindex|modindex|^_|whatsnew/changelog|^(search|contents|"
            r"copyright|license|download|bugs)\.html$",
        ),
        max_mb=12,
    ),
    Source(
        "linux-doc-6.1",
        "GPL-2",
        "Linux kernel documentation (reST/text, sampled)",
        "usr/share/doc/linux-doc-6.1/Documentation",
        from_files(
            "text", "**/*.rst.gz", "**/*.txt.gz", exclude=r"^translations/|^ABI/|^devicetree/|^sphinx"
        ),
        max_mb=8,
    ),
]


# ------------------------------------------------------------------------ fetch & unpack


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)


def fetch_packages(packages: list[str], debs: Path, download: bool) -> dict[str, Path]:
    """``.deb`` file of each package in ``debs``, downloading the missing ones."""
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing and not download:
        sys.exit(f"error: no .deb in {debs} for: {' '.join(missing)} (drop --no-install)")
    if missing:
        print(f"apt-get download {' '.join(missing)}", flush=True)
        try:
            _run(["apt-get", "download", *missing], cwd=debs)
        except subprocess.CalledProcessError:
            print("download failed; running apt-get update and retrying", flush=True)
            _run(["apt-get", "update"])
            _run(["apt-get", "download", *missing], cwd=debs)
    found = {}
    for package in packages:
        candidates = sorted(debs.glob(f"{package}_*.deb"))
        if len(candidates) > 1:
            print(f"warning: several .deb for {package}; using {candidates[-1].name}")
        found[package] = candidates[-1]
    return found


def unpack(deb: Path, subtree: str, into: Path) -> Path:
    """Unpack ``subtree`` of ``deb`` under ``into/<package>`` once; returns its path.

    A marker file records what was unpacked, so a new .deb or subtree unpacks again."""
    root = into / deb.name.split("_")[0]
    marker, stamp = root / ".unpacked-from", f"{deb.name} {subtree}"
    if not (marker.exists() and marker.read_text() == stamp):
        _run(["rm", "-rf", str(root)])
        full = root.with_name(root.name + ".full")
        _run(["rm", "-rf", str(full)])
        full.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(full)])  # whole package (hard links inside)
        (root / subtree).parent.mkdir(parents=True)
        (full / subtree).rename(root / subtree)
        _run(["rm", "-rf", str(full)])  # keep only what is read: the cache stays small
        marker.write_text(stamp)
    return root / subtree


# ----------------------------------------------------------------------- clean & pack

_ASCII = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00a0": " ",
        "\u2026": "...",
        "\u00b6": "",
        "\u200b": "",
        "\u00ad": "",
        "\u2002": " ",
        "\u2003": " ",
        "\u2009": " ",
        "\u2010": "-",
        "\u2011": "-",
    }
)
_BOILERPLATE = re.compile(
    r"copyright\s*(\(c\)|\u00a9|\d{4})|all rights reserved|permission is (hereby )?granted"
    r"|this (program|document|file|library|manual) is free software|without (any )?warranty"
    r"|gnu (general public|free documentation) license|spdx-license",
    re.I,
)
_CAPTION = re.compile(r"^(Table|Figure|Example|Listing|Procedure)\s+[\dA-Z][\d.]*\b")
_WORD = re.compile(r"^[(\"'\[]*[A-Za-z][a-z]*(?:['-][A-Za-z]+)*[)\]\"',.;:!?]*$")
_CODE_CHARS = set("{}[]<>=|\\$#@^~_/`*")
_ENGLISH = set(
    """the of and to a in is that it for was on as with be by this are not or his
her you he she i at from have but they which an will if can all we my your their one there
has been were so would when what me him them our no do more some may any should must also
than these those into its only other then such each about how use used""".split()
)


def normalise(paragraph: str) -> str:
    text = unicodedata.normalize("NFC", html.unescape(paragraph)).translate(_ASCII)
    return " ".join(text.split())


def _stats(text: str) -> tuple[int, int, int]:
    nonspace = max(1, len(text) - text.count(" "))
    letters = sum(c.isalpha() for c in text)
    return nonspace, letters, sum(c in _CODE_CHARS for c in text)


def is_prose(text: str) -> bool:
    """At least 5 words, mostly letters, few code characters, mostly plain words."""
    words = text.split()
    nonspace, letters, code = _stats(text)
    if len(words) < 5 or letters < 0.72 * nonspace or code > 0.03 * nonspace:
        return False
    non_ascii = sum(ord(c) > 0x24F and not 0x2000 <= ord(c) <= 0x206F for c in text)
    plain = sum(bool(_WORD.match(w)) for w in words)
    return plain >= 0.75 * len(words) and non_ascii <= 0.02 * nonspace


def is_heading(text: str) -> bool:
    nonspace, letters, code = _stats(text)
    return 1 <= len(text.split()) <= 12 and letters >= 0.7 * nonspace and code == 0


def clean(paragraphs: Paragraphs, seen: set[bytes]) -> Paragraphs:
    """Prose paragraphs in order; headings kept only when prose follows; a paragraph of
    20+ words already in ``seen`` (anywhere in the corpus so far) is dropped."""
    kept: list[tuple[str, bool]] = []
    for paragraph in map(normalise, paragraphs):
        if (
            not paragraph
            or _CAPTION.match(paragraph)
            or (_BOILERPLATE.search(paragraph) and len(paragraph) < 800)
        ):
            continue
        if is_prose(paragraph):
            if len(paragraph.split()) >= 20:
                key = hashlib.blake2b(paragraph.lower().encode(), digest_size=12).digest()
                if key in seen:
                    continue
                seen.add(key)
            kept.append((paragraph, True))
        elif is_heading(paragraph):
            kept.append((paragraph, False))
    return [p for i, (p, prose) in enumerate(kept) if prose or (i + 1 < len(kept) and kept[i + 1][1])]


def _join(paragraphs: Paragraphs) -> str:
    """Document text; trailing headings (short, no final punctuation) are dropped."""
    while paragraphs and len(paragraphs[-1].split()) <= 12 and paragraphs[-1][-1] not in ".!?\"')":
        paragraphs = paragraphs[:-1]
    return "\n\n".join(paragraphs)


def pack(raw_documents: Iterable[Paragraphs]) -> Iterator[str]:
    """Documents of MIN_WORDS..MAX_WORDS words: long raw documents are split at paragraph
    boundaries once past TARGET_WORDS, short ones are merged with the ones after them."""
    buffer: Paragraphs = []
    count = 0
    for paragraphs in raw_documents:
        if count >= MIN_WORDS:
            yield _join(buffer)
            buffer, count = [], 0
        for paragraph in paragraphs:
            words = len(paragraph.split())
            if words > MAX_WORDS - MIN_WORDS:
                continue
            if count >= TARGET_WORDS or count + words > MAX_WORDS:
                if count >= MIN_WORDS:
                    yield _join(buffer)
                buffer, count = [], 0
            buffer.append(paragraph)
            count += words
    if count >= MIN_WORDS:
        yield _join(buffer)


def english_ratio(text: str) -> float:
    words = [w.strip(".,;:!?\"'()[]").lower() for w in text.split()]
    return sum(w in _ENGLISH for w in words) / max(1, len(words))


# ----------------------------------------------------------------------------- main


def build_source(source: Source, root: Path, seen: set[bytes], seed: int) -> list[str]:
    """Clean, packed, English, deduplicated (and capped) documents of one source."""
    raw = (clean(paragraphs, seen) for paragraphs in source.extract(root))
    documents, digests = [], set()
    for document in pack(raw):
        digest = hashlib.blake2b(document.lower().encode(), digest_size=16).digest()
        if (
            digest not in digests and english_ratio(document) >= 0.25 and len(document.split()) >= MIN_WORDS
        ):  # _join may have trimmed it
            digests.add(digest)
            documents.append(document)
    if source.max_mb is not None:
        rng = random.Random(f"{seed}:cap:{source.package}")
        rng.shuffle(documents)
        budget, capped = source.max_mb * 1e6, []
        for document in documents:
            if budget <= 0:
                break
            capped.append(document)
            budget -= len(document)
        documents = capped
    return documents


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/corpus"))
    parser.add_argument(
        "--no-install", action="store_true", help="do not download packages; use the .deb files in OUT/_debs"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--only", nargs="*", help="build only these packages (debugging)")
    args = parser.parse_args(argv)

    sources = [s for s in SOURCES if not args.only or s.package in args.only]
    debs = fetch_packages([s.package for s in sources], args.out / "_debs", download=not args.no_install)
    seen: set[bytes] = set()
    train, heldout, stats = [], [], []
    for source in sources:
        root = unpack(debs[source.package], source.subtree, args.out / "_pkgs")
        version = _run(["dpkg-deb", "-f", str(debs[source.package]), "Version"]).stdout.strip()
        documents = build_source(source, root, seen, args.seed)
        random.Random(f"{args.seed}:split:{source.package}").shuffle(documents)
        n_heldout = max(1, round(HELDOUT_FRACTION * len(documents)))
        heldout += [{"text": d, "source": source.package} for d in documents[:n_heldout]]
        train += [{"text": d, "source": source.package} for d in documents[n_heldout:]]
        stats.append(
            {
                "package": source.package,
                "version": version,
                "licence": source.licence,
                "extracted": source.extracted,
                "documents": len(documents),
                "heldout_documents": n_heldout,
                "characters": sum(map(len, documents)),
                "words": sum(len(d.split()) for d in documents),
            }
        )
        print(
            f"{source.package:26} {version:26} {len(documents):6} docs "
            f"{stats[-1]['characters'] / 1e6:7.2f} MB",
            flush=True,
        )
    random.Random(args.seed).shuffle(train)
    random.Random(args.seed + 1).shuffle(heldout)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "heldout.jsonl", heldout)
    totals = {
        key: sum(s[key] for s in stats) for key in ("documents", "heldout_documents", "characters", "words")
    }
    summary = {
        "seed": args.seed,
        "min_words": MIN_WORDS,
        "target_words": TARGET_WORDS,
        "max_words": MAX_WORDS,
        "train_documents": len(train),
        "heldout_documents": len(heldout),
        "total": totals,
        "sources": stats,
    }
    (args.out / "corpus_stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"total: {totals['documents']} documents, {totals['characters'] / 1e6:.1f} MB, "
        f"{totals['words'] / 1e6:.2f} M words -> {args.out}"
    )


if __name__ == "__main__":
    main()
