"""Models: backbones, layers (GeM, DropBlock), heads, and the MaskPre training model."""
