"""One drawing module per claim. Each has NAME (its results/<NAME>/ directory and output file stem) and
draw(record, figures, tables) -> list of written paths, reading only the result record it is given."""
