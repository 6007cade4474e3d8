"""MkDocs hooks that build the documentation site from the repository as it is.

The pages in ``docs/`` are written to read well on a code host too, so they link to files
outside ``docs/`` (``../README.md``, ``../BENCHMARKS.md``, ``../examples/...``). MkDocs only
knows files inside ``docs/``; in strict mode such a link would fail the build. These hooks:

* give every repository file a page links reach (transitively) a place on the site, under
  ``repo/`` (a Markdown file as a page, any other file shown as its source), and rewrite the
  links to it; a link to a file that does not exist is left alone, so strict mode fails on it;
* generate the API reference: one page per public module (no part of its dotted name starts
  with an underscore), each rendered from its docstrings by mkdocstrings, listed in the nav.

Nothing is written into ``docs/``: the generated pages exist only in the build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "strict_singleton"
_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
IN_NAV = ("README.md", "BENCHMARKS.md")  # repository files the nav in mkdocs.yml names (as repo/...)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:|^#|^/")


def public_modules() -> list[str]:
    """The dotted names of the package's public modules, as tests/test_public_surface.py counts them."""
    src = ROOT / "src"
    names = []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if any(part.startswith("_") for part in parts):
            continue
        names.append(".".join(parts))
    return names


def _reference_uri(module: str) -> str:
    return f"reference/{module}.md"


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Fill the nav's "API reference" section with one page per public module."""
    for entry in config.nav or []:
        if isinstance(entry, dict) and "API reference" in entry:
            entry["API reference"] = [{m: _reference_uri(m)} for m in public_modules()]
    return config


def _site_uri(repo_path: str) -> str:
    """Where a repository file lives on the site."""
    if repo_path.startswith("docs/"):
        return repo_path[len("docs/") :]
    return f"repo/{repo_path}" if repo_path.endswith(".md") else f"repo/{repo_path}.md"


def _rewrite(markdown: str, repo_dir: str, site_uri: str, wanted: set[str]) -> str:
    """Point each link to a repository file at that file's page on the site."""

    def one(match: re.Match[str]) -> str:
        target = match.group(2)
        if _EXTERNAL.match(target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(repo_dir, path))
        candidate = ROOT / repo_path
        if candidate.is_dir() and (candidate / "README.md").is_file():
            repo_path = posixpath.join(repo_path, "README.md")
        elif not candidate.is_file() or repo_path.startswith(".."):
            return match.group(0)  # missing: left as written, so strict mode reports it
        if not repo_path.startswith("docs/"):
            wanted.add(repo_path)
        new = posixpath.relpath(_site_uri(repo_path), posixpath.dirname(site_uri) or ".")
        return f"{match.group(1)}{new}{'#' + anchor if anchor else ''}{match.group(3)}"

    return _LINK.sub(one, markdown)


def _repo_page(repo_path: str, wanted: set[str]) -> str:
    text = (ROOT / repo_path).read_text(encoding="utf-8")
    site_uri = _site_uri(repo_path)
    if repo_path.endswith(".md"):
        return _rewrite(text, posixpath.dirname(repo_path), site_uri, wanted)
    language = {".py": "python", ".json": "json", ".sh": "bash", ".txt": "text"}.get(Path(repo_path).suffix, "text")
    fence = "````" if "```" in text else "```"
    return f"# `{repo_path}`\n\n{fence}{language}\n{text}\n{fence}\n"


def _reference_page(module: str) -> str:
    return f"::: {module}\n    options:\n      show_root_heading: true\n      heading_level: 1\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the API reference and every repository file the pages link to."""
    for module in public_modules():
        files.append(File.generated(config, _reference_uri(module), content=_reference_page(module)))
    wanted: set[str] = set(IN_NAV)
    for page in files.documentation_pages():
        if page.abs_src_path and not page.generated_by:
            _rewrite(Path(page.abs_src_path).read_text(encoding="utf-8"), posixpath.dirname(f"docs/{page.src_uri}"), page.src_uri, wanted)
    done: set[str] = set()
    while wanted - done:
        repo_path = sorted(wanted - done)[0]
        done.add(repo_path)
        # Reached through links only, but for the files the nav names too.
        page = File.generated(config, _site_uri(repo_path), content=_repo_page(repo_path, wanted))
        page.inclusion = InclusionLevel.UNDEFINED if repo_path in IN_NAV else InclusionLevel.NOT_IN_NAV
        files.append(page)
    return files


def on_page_markdown(markdown: str, page: Any, config: MkDocsConfig, files: Files) -> str:
    """Rewrite the links of the pages in docs/ (generated pages were rewritten when made)."""
    if page.file.generated_by:
        return markdown
    return _rewrite(markdown, posixpath.dirname(f"docs/{page.file.src_uri}"), page.file.src_uri, set())
