"""Run directories and other output folders: written whole (staged, swapped in), read back with one-line errors.

The store knows no pipeline: a pipeline hands it a RunRecord (tables, arrays, summary, config).
"""

from .dirs import (
    DIR_KINDS,
    RUN_ENTRIES,
    StoreError,
    check_figures,
    check_files,
    check_out,
    check_resumable,
    claim_figures,
    claim_files,
    claim_resumable,
    remove_leftovers,
    remove_stale,
    write_dir,
)
from .jsonfile import read_json, strict_json, write_json
from .owner import owned
from .record import FILES, TABLES, Run, RunRecord, count_column, load_run, time_to_specialize, write_record

__all__ = [
    "DIR_KINDS",
    "FILES",
    "RUN_ENTRIES",
    "TABLES",
    "Run",
    "RunRecord",
    "StoreError",
    "check_figures",
    "check_files",
    "check_out",
    "check_resumable",
    "claim_figures",
    "claim_files",
    "claim_resumable",
    "count_column",
    "load_run",
    "owned",
    "read_json",
    "remove_leftovers",
    "remove_stale",
    "strict_json",
    "time_to_specialize",
    "write_dir",
    "write_json",
    "write_record",
]
