"""segpipe's library: tiled U-Net inference over zarr, from input file to mask on the input's grid.

Nothing here imports Prefect; the flows in ``flows/`` wrap these functions.
"""

__version__ = "0.1.0"
