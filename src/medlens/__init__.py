"""medlens: an offline workbench for honest medical-image AI studies."""

__version__ = "0.1.0"
