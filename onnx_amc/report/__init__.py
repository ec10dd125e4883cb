"""Run reports: report.json (schema.json), report.md for pull requests, report.html with plots.

The CLI builds a dict with :func:`new_report`, fills what it measured and calls
:func:`write_report`. Importing this package is cheap: matplotlib and jsonschema are imported
only when a report is validated or written.
"""

from __future__ import annotations

from .build import REPORT_FORMAT, file_info, new_report, to_jsonable, validate
from .write import write_report

__all__ = ["REPORT_FORMAT", "file_info", "new_report", "to_jsonable", "validate", "write_report"]
