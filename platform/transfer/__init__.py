"""Import (CSV, JSON Lines) and export of records, through RecordService."""

from .exporter import export_records, iter_export
from .importer import ApproximateMatch, ImportReport, RowError, import_file, import_records

__all__ = ["ApproximateMatch", "ImportReport", "RowError", "export_records", "import_file", "import_records", "iter_export"]
