"""The analyst workbench (``fraud workbench``): a web application over the alerts database.

One service layer (:mod:`queue`, :mod:`cases`, :mod:`stats`, :mod:`auth`) and
two presentations of it: server-rendered pages (:mod:`pages`, Jinja2 +
vendored htmx) and the JSON API under ``/api/v1`` (:mod:`api`).
"""
