"""Thin subclasses of TRL's trainers that take trl-plus components."""
