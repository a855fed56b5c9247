"""Data pipeline: synthetic source -> canonical dataset -> zarr shards -> stats -> training pairs.

Modules (each pipeline step has a `main(argv)` used by the CLI):
  synthetic.py  the built-in synthetic atmosphere (`synthesize`)
  archive.py    open zarr / netCDF entries (local or URL, globs, lists) and normalize their layout (CDS, RDA, WB2)
  names.py      archive variable names (ECMWF/CF short names, NCAR RDA names) -> WeatherBench2 names
  source.py     select variables, levels, times from the entries and merge them into the canonical dataset
  timeaxis.py   data.start/end/time_stride selection; gaps and duplicates refused at plan time
  regrid.py     source grid -> shards' grid: block means (data.coarsen) or conservative regridding (data.grid)
  shard.py      one time block -> one zarr v3 store (`shard`); `plan_blocks` for the Snakefile
  statics.py    time-invariant input fields (data.static) -> data/shards/static.zarr, normalized (`static`)
  stats.py      per-channel normalization statistics of the train split (`stats`); `Normalizer`
  forcings.py   known-in-advance inputs (cos solar zenith angle, sin/cos latitude)
  loader.py     (state, target at lead) pairs from shards, seeded resumable rank-sharded sampling
  ring.py       the loader's shared-memory batch ring (prefetch level 1); device.py: copies to the GPU (level 2)
  integrity.py  checksums of each shard's files (written by shard.py, checked by the loader)
Nothing here imports torch except loader.py, ring.py and device.py, so the data steps stay light.
"""

import warnings

# Snakemake marks each directory() output (our shard stores) with an empty `.snakemake_timestamp` file, which
# zarr-python then reports on every open; it is not part of the store and harmless.
warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")
