"""Reading runs and scored datasets back: the per-token heatmap (`tokrl inspect`) and metric plots (`tokrl plot`).

Above the trainers and pipelines: a report reads what they write (token dumps, metrics logs, pipeline stages)."""
