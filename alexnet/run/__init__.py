"""A run's files (`layout`), its checkpoints (`checkpoint`: atomic save, bit-exact RNG state, resumability)
and the trained model it leaves (`trained`). Imports `data`, `models`, `config`, `runtime` and `base`, never
`eval` or `training`."""
