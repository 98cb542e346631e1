"""Method parts (regularizers, compressors, memories, aggregation) and the presets that combine them."""
