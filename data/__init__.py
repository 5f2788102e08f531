"""Input pipeline: packing image folders into RecordIO, reading them with the paper's augmentation."""
