"""Many slides on Dask: the run, its workers and the cohort report."""
