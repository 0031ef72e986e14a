"""Assemble README.md from the sections in docs/readme/ (in file-name order)."""

from pathlib import Path

ORDER = [
    "00-intro.md", "simulator.md", "ingest.md", "25-features.md", "training.md",
    "evaluation.md", "serving.md", "45-scorer.md", "alerts.md", "90-tests-limits.md",
]

root = Path(__file__).resolve().parent
parts = [(root / "readme" / name).read_text().strip() for name in ORDER]
(root.parent / "README.md").write_text("\n\n".join(parts) + "\n")
