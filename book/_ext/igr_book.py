"""Sphinx extension for the igr-book: profiles, the status page and the figure gallery.

* The profile (``$IGR_PROFILE``, else ``cpu``; checked by :func:`igrlib.config.resolve_profile`)
  is the config value ``igr_profile``. Changing it re-reads every page, and each profile has its
  own jupyter-cache folder (``<cache>/<profile>``), so a build never shows another profile's
  outputs.
* ``igr-build-info``: a table of the build's profile, git commit, package versions and device.
* ``igr-exec-status``: per chapter, run time, when it ran, whether this build executed it or
  took it from the cache, and where its numbers came from: the stored runs its figures render
  (how many, computed when, at which commit) or the execution itself.
* ``igr-gallery``: every figure of this build's profile (``<figures_dir>/<profile>/index.json``)
  with its caption, both provenances (runs and drawing) and download links for the paper and the
  slide variant; the files are copied to ``<html>/figures/<profile>/``.
* A chapter taken from the execution cache gets its outputs back in the ``.ipynb`` offered for
  download (myst-nb 1.4 writes the notebook it read, without the cached outputs), and every
  downloaded notebook has its MyST roles ({numref}, {eq}, {cite}, {doc}, ...) turned into plain
  text or links, which Jupyter cannot render.
* The book's own CSS and JS (``book/_static``): figures open full size on click (an offline
  lightbox), wide tables and equations scroll in their own box, long code lines wrap.
* Binder and repository buttons appear only once ``repository.url`` in ``_config.yml`` names the
  repository the book is published from (an empty URL, or Jupyter Book's default, hides them).

The last two are placeholders filled by a post-transform, which runs while pages are written,
after every notebook has executed (Sphinx reads pages in name order, not toc order). Pages holding
any of the three directives are re-read on every build, since what they show changes without
their source changing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.environment import BuildEnvironment
from sphinx.errors import ConfigError as SphinxConfigError
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.osutil import relative_uri

from igrlib.config import ConfigError, resolve_profile
from igrlib.io import figures, paths

LOGGER = logging.getLogger(__name__)

#: Packages listed on the status page, besides those igrlib's provenance records.
BOOK_PACKAGES = ("jupyter-book", "myst-nb", "sphinx", "matplotlib", "pandas", "igrlib")
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
FORMAT_LABELS = {"pdf": "PDF", "svg": "SVG", "png": f"PNG ({figures.PNG_DPI} dpi)"}
VARIANT_LABELS = {"paper": "page", "slide": "slide 16:9"}
STATIC = Path(__file__).resolve().parents[1] / "_static"
#: Repository URLs that mean "not set": empty, or the one Jupyter Book fills in by default.
UNSET_REPOSITORY_URLS = {"", "https://github.com/executablebooks/jupyter-book"}


class GalleryNode(nodes.General, nodes.Element):
    """Placeholder for the figure gallery."""


class ExecStatusNode(nodes.General, nodes.Element):
    """Placeholder for the chapter execution table."""


def _mark_dynamic(env: BuildEnvironment) -> None:
    if not hasattr(env, "igr_dynamic_docs"):
        env.igr_dynamic_docs = set()
    env.igr_dynamic_docs.add(env.docname)


def _table(header: list[str], rows: list[list[nodes.Node | str]]) -> nodes.table:
    table = nodes.table(classes=["colwidths-auto"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in header)

    def row(cells: list[nodes.Node | str]) -> nodes.row:
        out = nodes.row()
        for cell in cells:
            para = nodes.paragraph()
            para += nodes.Text(cell) if isinstance(cell, str) else cell
            out += nodes.entry("", para)
        return out

    group += nodes.thead("", row(header))
    group += nodes.tbody("", *[row(r) for r in rows])
    return table


def _provenance() -> dict[str, Any]:
    """igrlib's provenance record (git, packages, device), computed in the kernels' interpreter.

    A subprocess keeps JAX out of the Sphinx process, which forks notebook kernels.
    """
    code = "import json; from igrlib.io import results; print(json.dumps(results.provenance()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=paths.PROJECT_ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"could not read the build's provenance:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class BuildInfo(SphinxDirective):
    """``igr-build-info``: profile, git commit, date, Python, device and package versions."""

    def run(self) -> list[nodes.Node]:
        _mark_dynamic(self.env)
        prov = _provenance()
        commit = prov["git_commit"] or "(no commit yet)"
        if prov["git_dirty"]:
            commit += " (with uncommitted changes)"
        device = prov["device"]
        packages = dict(prov["packages"])
        for name in BOOK_PACKAGES:
            try:
                packages[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                packages[name] = "not installed"
        rows = [
            ["profile", nodes.literal(text=self.config.igr_profile)],
            ["git commit", nodes.literal(text=commit)],
            ["built (UTC)", prov["date"]],
            ["device", f"{device['count']} × {device['kind']} ({device['platform']})"],
            ["host CPUs", str(prov["host_cpus"])],
            ["python", prov["python"]],
        ]
        rows += [[name, nodes.literal(text=str(version))] for name, version in sorted(packages.items())]
        return [_table(["", "value"], rows)]


class ExecStatus(SphinxDirective):
    """``igr-exec-status``: placeholder for the per-chapter execution table."""

    def run(self) -> list[nodes.Node]:
        _mark_dynamic(self.env)
        return [ExecStatusNode()]


class Gallery(SphinxDirective):
    """``igr-gallery``: placeholder for the figure gallery."""

    def run(self) -> list[nodes.Node]:
        _mark_dynamic(self.env)
        return [GalleryNode()]


def _toc_order(env: BuildEnvironment, root: str) -> list[str]:
    order: list[str] = []

    def visit(doc: str) -> None:
        if doc in order:
            return
        order.append(doc)
        for child in env.toctree_includes.get(doc, []):
            visit(child)

    visit(root)
    return order


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _day(iso: str | None) -> str:
    return (iso or "?")[:10]


def chapter_runs(env: BuildEnvironment, doc: str, index: dict[str, dict[str, Any]]) -> dict | None:
    """The stored runs behind a chapter's figures: their :func:`runs_summary` merged over every
    figure id the chapter's source saves (None when its figures show no stored runs)."""
    try:
        source = Path(env.doc2path(doc)).read_text()
    except OSError:
        return None
    found = [e["runs"] for fig_id, e in index.items()
             if e.get("runs") and f'"{fig_id}"' in source]
    if not found:
        return None
    dates = [d for r in found for d in (r["first"], r["last"]) if d]
    return {"n": max(r["n"] for r in found), "commits": sorted({c for r in found for c in r["commits"]}),
            "first": min(dates, default=None), "last": max(dates, default=None)}


def exec_status_table(env: BuildEnvironment, docname: str, root: str) -> nodes.Node:
    """The table of every executed chapter, in toc order, with where its numbers came from."""
    from myst_nb.sphinx_ import NbMetadataCollector

    data = NbMetadataCollector.get_doc_data(env)
    started = getattr(env, "igr_build_started", 0.0)
    index = figures.read_index(env.config.igr_profile)
    rows = []
    for doc in _toc_order(env, root):
        run = data.get(doc, {}).get("exec_data")
        if not run:
            continue
        link = pending_xref(refdoc=docname, refdomain="std", reftype="doc", refexplicit=True,
                            reftarget="/" + doc, refwarn=True)
        link += nodes.inline(text=env.titles[doc].astext() if doc in env.titles else doc)
        runtime = "-" if run["runtime"] is None else f"{run['runtime']:.1f}"
        state = "executed in this build" if run["mtime"] >= started else "from the cache"
        status = "ok" if run["succeeded"] else f"failed: {run['error'] or 'see the build log'}"
        rows.append([link, runtime, _utc(run["mtime"]), state,
                     figures.runs_sentence(chapter_runs(env, doc, index)), status])
    if not rows:
        return nodes.paragraph(text="No chapter was executed in this build.")
    return _table(["chapter", "run time (s)", "executed (UTC)", "cache", "numbers", "status"], rows)


def _provenance_line(entry: dict[str, Any]) -> nodes.paragraph:
    drawn = entry["variants"]["paper"].get("drawn", {})
    commit = (drawn.get("git_commit") or "no commit")[:12]
    line = nodes.paragraph()
    line += nodes.strong(text="profile ")
    line += nodes.literal(text=entry["profile"])
    if entry.get("dataset"):
        line += nodes.Text(f" · data: {entry['dataset']}")
    line += nodes.Text(f" · numbers: {figures.runs_sentence(entry.get('runs'))}")
    line += nodes.Text(f" · drawn {_day(drawn.get('date'))} at commit ")
    line += nodes.literal(text=commit + (" (dirty)" if drawn.get("git_dirty") else ""))
    line += nodes.Text(f" · igrlib {drawn.get('igrlib_version', '?')}")
    return line


def _figure_section(fig_id: str, entry: dict[str, Any], base: str, folder: str,
                    exists: bool) -> nodes.section:
    section = nodes.section(ids=[f"gallery-{fig_id}"])
    section += nodes.title(text=fig_id)
    if not exists:
        section += nodes.paragraph(text=f"(its files are missing from {paths.figures_dir()})")
        return section
    uri = lambda name: relative_uri(base, f"{folder}/{name}")  # noqa: E731
    png = uri(entry["variants"]["paper"]["files"]["png"])
    image = nodes.image(uri=png, candidates={"*": png}, alt=entry["caption"],
                        classes=["igr-gallery-image"])
    section += nodes.reference("", "", image, refuri=png, classes=["igr-zoom"])
    section += nodes.paragraph(text=entry["caption"])
    section += _provenance_line(entry)
    for variant, files in sorted(entry["variants"].items()):
        links = nodes.paragraph(classes=[f"igr-download-{variant}"])
        links += nodes.strong(text=f"{VARIANT_LABELS.get(variant, variant)}: ")
        for i, (fmt, name) in enumerate(sorted(files["files"].items())):
            if i:
                links += nodes.Text(" · ")
            links += nodes.reference("", FORMAT_LABELS.get(fmt, fmt), refuri=uri(name))
        section += links
    return section


def gallery(env: BuildEnvironment, base: str) -> list[nodes.Node]:
    """One section per figure of the build's profile (sorted by id); ``base`` is the page's URI."""
    profile = env.config.igr_profile
    directory = figures.directory(profile)
    index = figures.read_index(profile)
    if not index:
        return [nodes.paragraph(text=f"No {profile} figure has been saved yet (looked in {directory}).")]
    return [
        _figure_section(fig_id, entry, base, f"figures/{profile}",
                        all((directory / name).exists() for v in entry["variants"].values()
                            for name in v["files"].values()))
        for fig_id, entry in sorted(index.items())
    ]


class FillPlaceholders(SphinxPostTransform):
    """Replace the gallery and execution-table placeholders once every notebook has run."""

    default_priority = 8  # before ReferencesResolver (10), which resolves the chapter links

    def run(self, **kwargs: Any) -> None:
        docname = self.env.docname
        for node in list(self.document.findall(ExecStatusNode)):
            node.replace_self(exec_status_table(self.env, docname, self.config.root_doc))
        base = self.app.builder.get_target_uri(docname)
        for node in list(self.document.findall(GalleryNode)):
            node.replace_self(gallery(self.env, base))


def copy_figures(app: Sphinx, exception: Exception | None) -> None:
    """Copy the build profile's figure files to ``<outdir>/figures/<profile>/`` (the gallery's
    links); other profiles' figures stay out of this build."""
    if exception is not None or app.builder.format != "html":
        return
    profile = app.config.igr_profile
    directory = figures.directory(profile)
    target = Path(app.outdir) / "figures" / profile
    for entry in figures.read_index(profile).values():
        for variant in entry["variants"].values():
            for name in variant["files"].values():
                if (directory / name).exists():
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(directory / name, target / name)


def restore_cached_outputs(app: Sphinx, env: BuildEnvironment) -> None:
    """Merge the cached outputs into ``jupyter_execute/<doc>.ipynb`` where myst-nb left none.

    myst-nb writes that file, which sphinx-book-theme offers as the chapter's download, from the
    notebook as read, not from the one merged with the cache; so after a cache hit the download
    would have no outputs.
    """
    import nbformat
    from jupyter_cache import get_cache
    from myst_nb.sphinx_ import NbMetadataCollector

    config = env.mystnb_config
    if config.execution_mode != "cache":
        return
    cache = get_cache(config.execution_cache_path)
    for docname, data in NbMetadataCollector.get_doc_data(env).items():
        path = Path(config.output_folder) / f"{docname}.ipynb"
        if not data.get("exec_data") or not path.exists():
            continue
        notebook = nbformat.read(path, as_version=4)
        if any(c.get("outputs") for c in notebook.cells if c.cell_type == "code"):
            continue
        try:
            _, merged = cache.merge_match_into_notebook(notebook)
        except KeyError:  # executed with errors, or the cache was cleared: nothing to restore
            continue
        nbformat.write(merged, path)


#: ``{role}`content``` in MyST Markdown.
MYST_ROLE = re.compile(r"\{([a-zA-Z:_-]+)\}`([^`]*)`")
#: A MyST equation label after a closing ``$$``: ``$$ (label)``.
MYST_EQ_LABEL = re.compile(r"(\$\$)[ \t]*\(([^)\s]+)\)[ \t]*$", re.M)


def _explicit(content: str) -> tuple[str | None, str]:
    """``"text <target>"`` -> ``("text", "target")``; ``"target"`` -> ``(None, "target")``."""
    match = re.fullmatch(r"\s*(.*?)\s*<([^<>]+)>\s*", content)
    return (match.group(1) or None, match.group(2)) if match else (None, content.strip())


def _numbers(env: BuildEnvironment, doc: str, kind: str, node_id: str) -> str | None:
    number = env.toc_fignumbers.get(doc, {}).get(kind, {}).get(node_id)
    return ".".join(map(str, number)) if number else None


def plain_role(env: BuildEnvironment, docname: str, role: str, content: str) -> str:
    """What a MyST role reads as in a plain Jupyter notebook (Markdown, no Sphinx): figure and
    equation numbers as the book prints them, a page as a link to its notebook, a citation as
    its key in brackets, any other role as its text."""
    text, target = _explicit(content)
    if role == "numref":
        found = env.domaindata["std"]["labels"].get(target)
        number = found and _numbers(env, found[0], "figure", found[1])
        if number:
            return (text or "Figure %s").replace("%s", number).replace("{number}", number)
        return text or target
    if role == "eq":
        found = env.domaindata["math"]["objects"].get(target)
        number = found and (_numbers(env, found[0], "displaymath", f"equation-{target}")
                            or str(found[1]))
        return f"({number})" if number else f"({target})"
    if role == "cite" or role.startswith("cite:"):
        return "[" + ", ".join(k.strip() for k in content.split(",")) + "]"
    if role == "doc":
        doc = target.lstrip("/") if target.startswith("/") else \
            str(Path(docname).parent / target).removeprefix("./")
        title = text or (env.titles[doc].astext() if doc in env.titles else target)
        return f"[{title}]({relative_uri(docname, doc)}.ipynb)"
    if role in ("ref", "term", "any"):
        return text or target
    return content


def clean_notebook(path: Path, env: BuildEnvironment, docname: str) -> None:
    """Rewrite the Markdown cells of a downloadable notebook without MyST roles and equation
    labels (Jupyter shows them as raw text)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    changed = False
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        source = MYST_ROLE.sub(lambda m: plain_role(env, docname, m.group(1), m.group(2)),
                               cell.source)
        source = MYST_EQ_LABEL.sub(r"\1", source)
        if source != cell.source:
            cell.source, changed = source, True
    if changed:
        nbformat.write(notebook, path)


def clean_downloads(app: Sphinx, exception: Exception | None) -> None:
    """Clean every ``<outdir>/_sources/<doc>.ipynb`` (the chapters' download) of MyST syntax."""
    if exception is not None or app.builder.format != "html":
        return
    sources = Path(app.outdir) / "_sources"
    for path in sorted(sources.rglob("*.ipynb")):
        docname = path.relative_to(sources).with_suffix("").as_posix()
        if docname in app.env.found_docs:
            clean_notebook(path, app.env, docname)


def offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
                   doctree: nodes.Node | None) -> None:
    """Offer a chapter's executed notebook for download when no launch button is configured.

    sphinx-book-theme copies ``jupyter_execute/<page>.ipynb`` to ``_sources/`` and links it only
    as part of its launch buttons, which need a repository; this does the same without one (it
    runs before the theme's header buttons, which read ``ipynb_source``).
    """
    if app.config.html_theme_options.get("launch_buttons") or \
            "kernelspec" not in app.env.metadata.get(pagename, {}):
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.exists():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def check_environment(app: Sphinx, config: Config) -> None:
    """Resolve the profile, give it its own execution cache, refuse a text-only plot backend."""
    try:
        config.igr_profile = resolve_profile()
    except ConfigError as err:
        raise SphinxConfigError(str(err)) from None
    cache = config.nb_execution_cache_path or Path(app.outdir).parent / ".jupyter_cache"
    config.nb_execution_cache_path = str(Path(cache) / config.igr_profile)
    theme = config.html_theme_options = dict(getattr(config, "html_theme_options", None) or {})
    if theme.get("repository_url", "") in UNSET_REPOSITORY_URLS:
        # no published repository yet: a Binder or repository button would lead nowhere, so show
        # none (sphinx-book-theme's launch buttons also fail without a repository);
        # offer_notebook then offers each chapter's .ipynb, which the launch buttons did
        theme["repository_url"] = ""
        theme["launch_buttons"] = {}
        for button in ("use_repository_button", "use_issues_button", "use_edit_page_button",
                       "use_source_button"):
            theme[button] = False
    else:
        theme["use_repository_button"] = True
    backend = os.environ.get("MPLBACKEND")
    if backend and backend != INLINE_BACKEND:
        LOGGER.warning(f"MPLBACKEND={backend} is set: the chapters' figures would become text; "
                       "unset it before building the book")


def note_build_start(app: Sphinx) -> None:
    app.env.igr_build_started = time.time()


def purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    getattr(env, "igr_dynamic_docs", set()).discard(docname)


def merge(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment) -> None:
    env.igr_dynamic_docs = getattr(env, "igr_dynamic_docs", set()) | getattr(
        other, "igr_dynamic_docs", set())


def always_reread(app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str],
                  removed: set[str]) -> list[str]:
    return sorted(getattr(env, "igr_dynamic_docs", set()) - removed)


def add_static(app: Sphinx) -> None:
    """Serve ``book/_static`` (the reader's CSS and JS) with the book."""
    app.config.html_static_path = [*app.config.html_static_path, str(STATIC)]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("igr_profile", "", "env", [str])
    app.add_css_file("igr-book.css")
    app.add_js_file("igr-book.js")
    app.add_node(GalleryNode)
    app.add_node(ExecStatusNode)
    app.add_directive("igr-build-info", BuildInfo)
    app.add_directive("igr-exec-status", ExecStatus)
    app.add_directive("igr-gallery", Gallery)
    app.add_post_transform(FillPlaceholders)
    app.connect("config-inited", check_environment)
    app.connect("builder-inited", note_build_start)
    app.connect("builder-inited", add_static)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("env-get-outdated", always_reread)
    app.connect("env-updated", restore_cached_outputs)
    app.connect("html-page-context", offer_notebook)  # priority 500: before the theme's 501
    app.connect("build-finished", copy_figures)
    app.connect("build-finished", clean_downloads)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
