"""One router per resource: health, datasets, tables."""
