"""Stage 10, reports: what the commands found, for people (terminal, HTML, Markdown) and tools (JSON).

``tables`` (rich tables and number formatting), ``optimize`` and ``estimate`` (the documents of
those commands), ``html`` and ``svg`` (self-contained HTML pages), ``files`` (``--report FILE``
by extension), ``node_data`` (Model Explorer overlays), ``provenance`` (where an estimate comes from).
"""
