"""Installed plug-ins: packages that declare entry points in the group ``flarebench.parts``.

    [project.entry-points."flarebench.parts"]
    my_parts = "my_pkg.flarebench_parts"

Each entry point names a module (``module`` or ``module:attr``); :func:`load_plugins` imports it once (from
``registry.load_parts``), so its ``@register`` classes and ``preset(...)`` lines run: its parts and presets
then appear in ``flarebench methods`` / ``parts``, ``-p``, TOML, sweeps, compare and figures like built-ins.
A plug-in that fails to import is one logged warning naming it (``flarebench: warning: ...`` on the
command line); the other parts still work. :func:`plugin_of` says which plug-in registered a part or preset
(config.json records it with the distribution's version).
"""

from __future__ import annotations

import logging

GROUP = "flarebench.parts"
log = logging.getLogger("flarebench.plugins")
_ORIGIN: dict[tuple[str, str], dict] = {}  # (kind or "method", name) -> {"plugin", "distribution", "version"}
FAILED: dict[str, str] = {}  # entry point name -> why it failed to import


def load_plugins() -> None:
    """Import every ``flarebench.parts`` entry point's module; record what each registered."""
    import importlib.metadata as md

    from .methods.presets import PRESETS
    from .methods.registry import REGISTRY

    for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        origin = {"plugin": ep.name, "distribution": dist.name if dist else None, "version": dist.version if dist else None}
        before = {kind: set(table) for kind, table in REGISTRY.items()}, set(PRESETS)
        try:
            ep.load()
        except Exception as e:  # a broken plug-in must not break flarebench
            why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            FAILED[ep.name] = why
            log.warning("plug-in %s (%s) failed to import and is skipped: %s", ep.name, ep.value, why)
            continue
        for kind, table in REGISTRY.items():
            for name in set(table) - before[0][kind]:
                _ORIGIN[(kind, name)] = origin
        for name in set(PRESETS) - before[1]:
            _ORIGIN[("method", name)] = origin


def plugin_of(kind: str, name: str) -> dict | None:
    """``{"plugin", "distribution", "version"}`` of the plug-in that registered part ``kind/name`` (kind
    ``method`` for a preset), or None for a built-in."""
    from .methods.registry import load_parts

    load_parts()
    return _ORIGIN.get((kind, name))


__all__ = ["GROUP", "load_plugins", "plugin_of", "FAILED"]
