"""Sphinx extension for the book's API reference (book/api.md).

Keras layers and models define ``__new__(cls, *args, **kwargs)``, and
autodoc prefers ``__new__`` over ``__init__`` when it builds a class
signature, so every llmft layer and model would be shown as
``GPT(*args, **kwargs)``. This hook puts the real keyword arguments of the
class's own ``__init__`` back, without type hints (see ``autodoc_typehints``
in _config.yml).

napoleon reads the first line of a property's docstring as
``type: description`` when it has a colon, so "sha256 of the vocabulary: a
model ... stores it" would render "sha256 of the vocabulary" as a type (and
-n reports a missing cross-reference target). llmft's property docstrings
are prose: they are kept as written.
"""

import inspect


def _init_signature(cls):
    init = cls.__dict__.get("__init__")
    if init is None:
        return None
    params = list(inspect.signature(init).parameters.values())[1:]  # drop self
    params = [p.replace(annotation=inspect.Parameter.empty) for p in params]
    return str(inspect.Signature(params))


def fix_keras_class_signature(app, what, name, obj, options, signature, return_annotation):
    if what == "class" and signature == "(*args, **kwargs)" and inspect.isclass(obj):
        real = _init_signature(obj)
        if real is not None:
            return real, return_annotation
    return None


_PROPERTY_DOCSTRINGS = {}


def _keep_property_docstring(app, what, name, obj, options, lines):
    if what == "property":
        _PROPERTY_DOCSTRINGS[name] = list(lines)


def _restore_property_docstring(app, what, name, obj, options, lines):
    if what == "property" and name in _PROPERTY_DOCSTRINGS:
        lines[:] = _PROPERTY_DOCSTRINGS.pop(name)


def setup(app):
    app.setup_extension("sphinx.ext.napoleon")
    app.connect("autodoc-process-signature", fix_keras_class_signature)
    # napoleon processes docstrings at the default priority (500): save before, restore after.
    app.connect("autodoc-process-docstring", _keep_property_docstring, priority=400)
    app.connect("autodoc-process-docstring", _restore_property_docstring, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
