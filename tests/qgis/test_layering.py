"""The plugin's layering, checked on its source: only the dock touches the dock's widgets, and
only the dock and the plugin entry (its toolbar action) use Qt widgets at all."""

from __future__ import annotations

import ast

WIDGET_USERS = {"dock.py", "plugin.py"}


def _modules(plugin_dir):
    folder = plugin_dir / "rs_geo_edit_qgis"
    return {path.name: ast.parse(path.read_text()) for path in sorted(folder.glob("*.py"))}


def test_only_the_dock_touches_its_widgets(plugin, plugin_dir):
    from qgis.PyQt.QtWidgets import QWidget

    widgets = {name for name, value in vars(plugin.dock).items() if isinstance(value, QWidget)}
    assert {"stage", "health", "url", "progress", "install_log", "run_button"} <= widgets
    touched = []
    for name, tree in _modules(plugin_dir).items():
        if name == "dock.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in widgets:
                owner = node.value
                if (isinstance(owner, ast.Name) and owner.id == "dock") or \
                        (isinstance(owner, ast.Attribute) and owner.attr == "dock"):
                    touched.append(f"{name}:{node.lineno} .{node.attr}")
    assert not touched


def test_services_use_no_widgets(plugin_dir):
    users = set()
    for name, tree in _modules(plugin_dir).items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("QtWidgets"):
                users.add(name)
    assert users <= WIDGET_USERS, users - WIDGET_USERS
