"""One module per ``trl-plus`` sub-command."""
