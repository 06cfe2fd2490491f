"""Sphinx configuration for Flask-FlashSale."""

from __future__ import annotations

project = "Flask-FlashSale"
author = "Flask-FlashSale contributors"
copyright = "2026, Flask-FlashSale contributors"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
# No intersphinx: CI and the build machines have no network to fetch inventories.
html_theme = "furo"
html_title = "Flask-FlashSale"
