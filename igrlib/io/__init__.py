"""Input and output: data sets, the results store, figure export and paths."""
