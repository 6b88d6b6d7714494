"""Sphinx extension: two fixes that keep the browser console of every page clean.

Found by tests/test_browser.py (issue 11), both on every page of the book:

1. ``Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been
   declared``. sphinx-thebe registers an inline ``<script>const THEBE_JS_URL
   = ...</script>`` once per build, but with Jupyter Book 1 on Sphinx 7.4 the
   page context lists some inline scripts twice (this one and sphinx-togglebutton's
   selector); a second ``const`` of the same name is a syntax error. The fix
   drops duplicates from the page's ``script_files`` (same file or same
   inline body, same attributes, whatever the priority), keeping the first.
2. ``Got invalid theme mode: . Resetting to auto.`` The PyData theme reads the
   light/dark mode from ``localStorage`` and falls back to ``default_mode``
   of ``html_context``, which Jupyter Book leaves empty: a first visit logs the
   error. The fix sets it to ``"auto"`` (what the theme falls back to) unless set.

Enabled in ``_config.yml`` under ``sphinx.local_extensions`` (``llmft_html_assets: book/_ext``).
Introduced with issue 11 (browser test); not part of the ``llmft`` package.
"""

from __future__ import annotations


def _default_mode(app, config):
    context = dict(config.html_context or {})
    if not context.get("default_mode"):
        context["default_mode"] = "auto"  # what the theme falls back to, without the error
        config.html_context = context


def _script_key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    # an inline script is listed with filename None when an extension adds it
    # after the builder started, and with "" when it comes from the registry
    return (getattr(script, "filename", script) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:  # priorities may differ: the first one stays
            seen.add(key)
            unique.append(script)
    if len(unique) != len(scripts):
        context["script_files"] = unique


def setup(app):
    app.connect("config-inited", _default_mode)
    # after the other extensions have added their page scripts
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
