"""drengine: a backup and disaster-recovery engine.

Layers (dependencies point down only): ``cli`` -> ``engine`` -> ``pipeline``/``sources`` ->
``repository`` -> ``crypto``/``storage`` -> ``core``. See ``docs/architecture.md``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
