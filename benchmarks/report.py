"""Where a benchmark's results go: its Markdown report and the JSON of every figure, side by side."""
import json
import os


def write_report(output_dir, name, markdown, result):
    """``NAME.md`` (the report, as printed) and ``NAME.json`` (``result``) in ``output_dir``, made if missing."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{name}.md"), "w") as handle:
        handle.write(markdown.rstrip("\n") + "\n")
    with open(os.path.join(output_dir, f"{name}.json"), "w") as handle:
        json.dump(result, handle, indent=2)
