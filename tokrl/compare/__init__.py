"""`tokrl compare`: several methods side by side, each over several seeds, with intervals and a report."""
