"""Training data: reading files, loading a recipe's splits, checking rows, filtering.

One module a concern, each importing only the ones below it and the leaves
(``trl_plus.errors``); nothing here builds a plugin manager (a caller passes ``hooks``):

- :mod:`~trl_plus.data.report`: the filter report's file (a leaf everything may import);
- :mod:`~trl_plus.data.files`: file formats by suffix, compression, UTF-8, CSV headers;
- :mod:`~trl_plus.data.json_lines`: the bad lines of a JSON Lines file, and loading the good ones;
- :mod:`~trl_plus.data.splits`: loading a recipe's split, which returns its load report;
- :mod:`~trl_plus.data.columns`: what an Arrow column holds (text, chat messages, JSON);
- :mod:`~trl_plus.data.rows`: the row checks and the chat-template check;
- :mod:`~trl_plus.data.filters`: the filter chain and its token-length stage;
- :mod:`~trl_plus.data.prepare`: everything before and after TRL tokenises a split.
"""
