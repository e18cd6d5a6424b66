"""Design-space sweeps: ``llmc sweep SPEC.yaml`` compiles a model under every combination of
recipes, boards and contexts as Ray tasks, caches each point by a content hash in the output
folder, and writes the points, their Pareto front, a report and plots (docs/sweep.md).

- :mod:`.spec`: the spec file, checked whole before anything runs; the points it spans;
- :mod:`.identity`: the content hash of a point (model digest or config, recipe, board, ...);
- :mod:`.point`: one point, as one Ray task runs it (recipe, design, timing model, perplexity);
- :mod:`.folder`: the output folder and its cache;
- :mod:`.pareto`, :mod:`.outputs`: the front, the tables, the report and the plots;
- :mod:`.run`: the driver (local Ray or a cluster at an address).
"""
