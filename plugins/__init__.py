"""Built-in plugins. Each module is an ordinary plugin, registered through the same hooks
and loaded the same way (by module name) as a third party's."""
