"""The CRM's data tooling: imports (`imports`), exports (`exports`), finding and merging duplicates
(`dedupe`, `merge`), the data-quality rules (`quality`) and personal-data requests (`privacy`)."""
