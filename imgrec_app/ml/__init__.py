"""Machine learning for imgrec: backbones, preprocessing, encoders. Imports no Django."""
