"""An example flarebench plug-in: the ``topk8`` compressor, the ``topk8-ef`` method, the ``leaf-lstm`` model.

Install it next to flarebench (``pip install -e examples/plugin``); its entry point (pyproject.toml,
group ``flarebench.parts``) names this package, so flarebench imports it and the lines below register
the parts and the preset.
"""

from flarebench.methods.presets import preset

from . import compressor, model  # noqa: F401  (register topk8 and leaf-lstm)

preset("topk8-ef", "top-k with 8-bit values (one fp32 scale per tensor) and error feedback (example plug-in)",
       "flarebench example plug-in", compressor="topk8", memory="residual")
